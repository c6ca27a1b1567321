import time

from django.core.management.base import BaseCommand, CommandError

from accounts import clock
from platform.synthetic import synthetic_history_clear, synthetic_history_load


class Command(BaseCommand):
    help = (
        "Load a realistic synthetic usage history (usage rows and moderation events) for demos and for measuring "
        "the admin dashboard. Synthetic rows carry request ids starting with 'synth-'; --clear removes them."
    )

    def add_arguments(self, parser):
        parser.add_argument("--rows", type=int, default=100_000, help="Usage rows to write (default 100000).")
        parser.add_argument("--days", type=int, default=60, help="Spread over this many days before now (default 60).")
        parser.add_argument("--accounts", type=int, default=30, help="Accounts to spread them over (default 30).")
        parser.add_argument("--seed", type=int, default=0, help="Random seed: the same seed gives the same history.")
        parser.add_argument("--batch-size", type=int, default=10_000)
        parser.add_argument("--clear", action="store_true", help="Delete earlier synthetic rows first.")

    def handle(self, *args, rows, days, accounts, seed, batch_size, clear, **options):
        if rows < 0 or days < 1 or accounts < 1 or batch_size < 1:
            raise CommandError("--rows must be >= 0; --days, --accounts and --batch-size must be >= 1")
        if clear:
            usage, events = synthetic_history_clear()
            self.stdout.write(f"Deleted {usage} synthetic usage rows and {events} moderation events.")
        started = time.monotonic()
        report_every = max(1, rows // 10)

        def progress(done, total):
            if done % report_every < batch_size or done == total:
                self.stdout.write(f"  {done}/{total} usage rows ({time.monotonic() - started:.0f} s)")

        result = synthetic_history_load(
            rows=rows, days=days, accounts=accounts, end=clock.now(), seed=seed, batch_size=batch_size,
            progress=progress,
        )
        self.stdout.write(
            f"Loaded {result.usage_rows} usage rows and {result.moderation_events} moderation events for "
            f"{result.accounts} accounts ({result.keys} keys), {result.start:%Y-%m-%d %H:%M} to "
            f"{result.end:%Y-%m-%d %H:%M} UTC, in {time.monotonic() - started:.1f} s."
        )
