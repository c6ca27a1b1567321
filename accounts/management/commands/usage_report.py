import json
from datetime import date

from django.core.management.base import BaseCommand, CommandError

from accounts.models import Account
from accounts.reports import usage_csv, usage_report, usage_rows


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"Not a date (YYYY-MM-DD): {value!r}") from None


class Command(BaseCommand):
    help = "Usage per UTC day, account, key, endpoint and model, as CSV or JSON (the same numbers as /v1/usage)."

    def add_arguments(self, parser):
        parser.add_argument("--since", type=_date, default=None, help="First day, inclusive (YYYY-MM-DD).")
        parser.add_argument("--until", type=_date, default=None, help="Last day, inclusive (YYYY-MM-DD).")
        parser.add_argument("--account", default=None, help="Account name; default: every account.")
        parser.add_argument("--format", choices=["csv", "json"], default="csv")

    def handle(self, *args, since, until, account, format, **options):
        if since and until and since > until:
            raise CommandError("--since must not be after --until")
        account_obj = None
        if account:
            account_obj = Account.objects.filter(name=account).first()
            if account_obj is None:
                raise CommandError(f"No account named {account!r}")
        if format == "csv":
            self.stdout.write(usage_csv(usage_rows(since=since, until=until, account=account_obj)), ending="")
        else:
            self.stdout.write(json.dumps(usage_report(since=since, until=until, account=account_obj), indent=2))
