from django.core.management.base import BaseCommand

from accounts.models import ApiKey
from accounts.services import account_get_or_create, key_create


class Command(BaseCommand):
    help = "Create a demo account and key when no key exists yet, printing the key once. Otherwise do nothing."

    def handle(self, *args, **options):
        if ApiKey.objects.exists():
            self.stdout.write("API keys already exist; create another with: python manage.py create_api_key --account NAME")
            return
        created = key_create(account=account_get_or_create(name="demo"), name="demo")
        self.stdout.write("Created a demo API key (shown only this once; store it now):")
        self.stdout.write(f"  export SLUICE_API_KEY={created.plaintext}")
