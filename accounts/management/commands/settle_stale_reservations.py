from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand

from accounts.services import stale_reservations_settle


class Command(BaseCommand):
    help = (
        "Settle quota reservations left pending by a killed worker (charging the prompt, refunding the rest). "
        "Safe to run at any time, e.g. every few minutes from cron."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than", type=int, default=None, help="Seconds; default SLUICE_STALE_RESERVATION_S."
        )

    def handle(self, *args, older_than, **options):
        seconds = settings.SLUICE_STALE_RESERVATION_S if older_than is None else max(0, older_than)
        settled = stale_reservations_settle(older_than=timedelta(seconds=seconds))
        self.stdout.write(f"Settled {settled} stale reservation(s).")
