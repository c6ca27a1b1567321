from django.core.management.base import BaseCommand

from accounts.models import ApiKey


class Command(BaseCommand):
    help = "List API keys (never their secrets)."

    def add_arguments(self, parser):
        parser.add_argument("--account", default=None)

    def handle(self, *args, account, **options):
        keys = ApiKey.objects.select_related("account").order_by("account__name", "created_at")
        if account:
            keys = keys.filter(account__name=account)
        for key in keys:
            state = "revoked" if key.revoked_at else ("suspended" if key.suspended_at else "active")
            self.stdout.write(
                f"{key.lookup_id}  {key.account.name:20} {key.name or '-':20} {state:9} …{key.last_four} "
                f"scopes={','.join(key.scopes)} expires={key.expires_at.isoformat() if key.expires_at else '-'}"
            )
