from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.models import ApiKey
from accounts.services import key_rotate
from platform.errors import ApiError


class Command(BaseCommand):
    help = "Replace an API key with a new one; the old key keeps working for a grace period. Prints the new key last."

    def add_arguments(self, parser):
        parser.add_argument("key_id")
        parser.add_argument("--grace-seconds", type=int, default=None)

    def handle(self, *args, key_id, grace_seconds, **options):
        key = ApiKey.objects.filter(lookup_id=key_id, revoked_at__isnull=True).first()
        if key is None:
            raise CommandError(f"No usable key with id {key_id}")
        if grace_seconds is not None and grace_seconds < 0:
            raise CommandError("--grace-seconds must be >= 0")
        grace = settings.SLUICE_KEY_ROTATION_GRACE_S if grace_seconds is None else grace_seconds
        try:
            created = key_rotate(key=key, grace_seconds=grace)
        except ApiError as refused:  # expired, suspended or already rotated
            raise CommandError(refused.message) from None
        self.stdout.write(f"Old key {key.display} stops working in {grace} s. New key (shown once):")
        self.stdout.write(created.plaintext)
