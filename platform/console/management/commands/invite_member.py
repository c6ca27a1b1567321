from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.members import ROLE_NAMES, MembershipRefused, member_invite
from accounts.models import OWNER, Account
from platform.console.invitations import invitation_email


class Command(BaseCommand):
    help = ("Invite a person to an account's console (by default as its owner): creates their user, emails a "
            "set-password link that works once, and prints the link alone on the last line.")

    def add_arguments(self, parser):
        parser.add_argument("--account", required=True, help="Account name (it must exist).")
        parser.add_argument("--email", required=True)
        parser.add_argument("--role", default=OWNER, choices=ROLE_NAMES)
        parser.add_argument("--base-url", default=None,
                            help="Where the console is reached (default SLUICE_CONSOLE_BASE_URL).")

    def handle(self, *args, account, email, role, base_url, **options):
        found = Account.objects.filter(name=account).first()
        if found is None:
            raise CommandError(f"No account named {account!r}.")
        try:
            membership = member_invite(account=found, email=email, role=role)
        except MembershipRefused as refused:
            raise CommandError(str(refused)) from None
        link = invitation_email(membership=membership, base_url=base_url or settings.SLUICE_CONSOLE_BASE_URL)
        self.stdout.write(f"Invited {membership.user.email} to '{found.name}' as {role}; the email has been sent.")
        self.stdout.write(link)
