from django.core.management.base import BaseCommand, CommandError

from accounts.models import ALL_SCOPES
from accounts.services import account_get_or_create, key_create


class Command(BaseCommand):
    help = "Create an API key (and its account if needed). The plaintext key is printed alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("--account", required=True, help="Account name; created if it does not exist.")
        parser.add_argument("--name", default="", help="A label for the key.")
        parser.add_argument(
            "--scopes", default=",".join(ALL_SCOPES), help=f"Comma-separated, from: {', '.join(ALL_SCOPES)}."
        )

    def handle(self, *args, account, name, scopes, **options):
        scope_list = [scope.strip() for scope in scopes.split(",") if scope.strip()]
        unknown = set(scope_list) - set(ALL_SCOPES)
        if unknown:
            raise CommandError(f"Unknown scopes: {', '.join(sorted(unknown))}")
        created = key_create(account=account_get_or_create(name=account), name=name, scopes=scope_list)
        self.stdout.write(f"Created key {created.key.display} for account '{account}' with scopes {scope_list}.")
        self.stdout.write("Store it now: it is shown only this once.")
        self.stdout.write(created.plaintext)
