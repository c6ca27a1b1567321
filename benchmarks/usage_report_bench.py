"""The usage report's aggregation, three ways side by side on the same rows: what ``accounts.reports.usage_rows``
does (each day's grouped query, run as one UNION ALL statement per 200 days), the one query per calendar day it
replaced, and one GROUP BY over a day computed by the database (substr on SQLite, to_char on PostgreSQL).

Loads a synthetic history (``platform.synthetic``, default 200,000 usage rows over 60 days) into a throwaway
SQLite file, or into a PostgreSQL database you own with --postgres (migrated; the synthetic rows are removed
after), then times each form for the last 30 days (every account, one account) and for 366 days (mostly empty
days). All forms must return the same rows.

    .venv/bin/python benchmarks/usage_report_bench.py [--rows 200000] [--repeat 3]
        [--postgres postgres://postgres@127.0.0.1:5432/sluice_<yours>]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _counts() -> dict:
    from django.db.models import Count, Q, Sum

    from accounts.reports import MODERATION_BLOCKED

    return dict(requests=Count("id"), prompt_tokens=Sum("prompt_tokens"), completion_tokens=Sum("completion_tokens"),
                errors=Count("id", filter=Q(status_code__gte=400)), rate_limited=Count("id", filter=Q(status_code=429)),
                moderation_blocks=Count("id", filter=MODERATION_BLOCKED))


def _records(account):
    from accounts.models import UsageRecord

    records = UsageRecord.objects.order_by()
    return records if account is None else records.filter(account=account)


def per_day_rows(*, since: date, until: date, account=None) -> list[dict]:
    """The replaced form: one grouped query per calendar day."""
    rows = []
    for n in range((until - since).days + 1):
        day = since + timedelta(days=n)
        start = datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc)
        grouped = (_records(account).filter(created_at__gte=start, created_at__lt=start + timedelta(days=1))
                   .values("account_id", "api_key_id", "endpoint", "model").annotate(**_counts()))
        rows += [{"day": day.isoformat(), **row} for row in grouped]
    return rows


def grouped_by_day_rows(*, since: date, until: date, account=None) -> list[dict]:
    """The alternative: one GROUP BY over the whole range, the day computed by the database."""
    from django.db.models import CharField, Func

    class UtcDay(Func):
        output_field = CharField()

        def as_sqlite(self, compiler, connection, **extra):
            return self.as_sql(compiler, connection, template="substr(%(expressions)s, 1, 10)", **extra)

        def as_postgresql(self, compiler, connection, **extra):
            template = "to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
            return self.as_sql(compiler, connection, template=template, **extra)

    start = datetime.combine(since, datetime.min.time(), tzinfo=timezone.utc)
    stop = datetime.combine(until + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
    return list(_records(account).filter(created_at__gte=start, created_at__lt=stop)
                .annotate(day=UtcDay("created_at")).values("day", "account_id", "api_key_id", "endpoint", "model")
                .annotate(**_counts()))


def timed(function, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", default="", help="a PostgreSQL database of yours (migrated here)")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="sluice-usagebench-")
    os.environ["DATABASE_URL"] = args.postgres or f"sqlite:///{Path(tmp.name) / 'bench.sqlite3'}"
    os.environ.setdefault("SECRET_KEY", "usage-report-bench-only")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "platform.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Count
    from django.test.utils import CaptureQueriesContext

    from accounts.models import Account
    from accounts.reports import usage_rows
    from platform.synthetic import synthetic_history_clear, synthetic_history_load

    print(f"database: {connection.vendor}, cpus: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    call_command("migrate", verbosity=0)
    end = datetime(2026, 12, 1, tzinfo=timezone.utc)
    started = time.perf_counter()
    synthetic_history_load(rows=args.rows, days=60, accounts=30, end=end)
    print(f"loaded {args.rows:,} usage rows over 60 days in {time.perf_counter() - started:.1f} s")
    if connection.vendor == "postgresql":
        connection.cursor().execute("VACUUM ANALYZE accounts_usagerecord")
    until = (end - timedelta(microseconds=1)).date()
    heaviest = Account.objects.annotate(n=Count("usage")).order_by("-n").first()
    cases = [
        ("30 days, every account", until - timedelta(days=29), until, None),
        ("30 days, one account", until - timedelta(days=29), until, heaviest),
        ("366 days, every account", until - timedelta(days=365), until, None),
    ]
    forms = [("usage_rows", None), ("per day", per_day_rows), ("one GROUP BY", grouped_by_day_rows)]
    print(f"{'range':<26}" + "".join(f"{name:>22}" for name, _ in forms) + "   (median ms, queries)")
    try:
        for label, since, last, account in cases:
            figures, results = [], []
            for name, form in forms:
                def call():
                    if form is None:
                        return usage_rows(since=since, until=last, account=account)
                    return form(since=since, until=last, account=account)

                with CaptureQueriesContext(connection) as queries:
                    seconds, rows = timed(call, args.repeat)
                figures.append((seconds, len(queries) // args.repeat))
                results.append(sorted((r["day"], r["requests"], r["prompt_tokens"] or 0) for r in rows))
            assert all(result == results[0] for result in results), f"{label}: the forms disagree"
            base = figures[0][0]
            print(f"{label:<26}" + "".join(f"{s * 1000:>9.0f} ({q:>3}) {s / base:>5.2f}x" for s, q in figures))
    finally:
        if args.postgres:
            synthetic_history_clear()
        tmp.cleanup()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
