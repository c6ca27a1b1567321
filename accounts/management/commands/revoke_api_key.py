from django.core.management.base import BaseCommand, CommandError

from accounts.models import ApiKey
from accounts.services import key_revoke


class Command(BaseCommand):
    help = "Revoke an API key, irreversibly, by its id (the lookup id shown in lists)."

    def add_arguments(self, parser):
        parser.add_argument("key_id")

    def handle(self, *args, key_id, **options):
        key = ApiKey.objects.filter(lookup_id=key_id).first()
        if key is None:
            raise CommandError(f"No key with id {key_id}")
        key_revoke(key=key)
        self.stdout.write(f"Revoked {key.display} at {key.revoked_at.isoformat()}")
