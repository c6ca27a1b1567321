"""Usage reports: one aggregation in the database, shared by ``GET /v1/usage``, the admin's CSV export and
report download, and the ``usage_report`` command, so they always agree.

Moderation blocks are counted from the usage rows themselves: a prompt refused by the content policy ends
with the error code ``content_filter`` and an output cut off by it with the finish reason ``content_filter``
(OpenAI's names for both). So accounts needs nothing from moderation, and the counts group by day, key,
endpoint and model like every other column."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import date, datetime, time, timedelta, timezone

from django.db.models import CharField, Count, Func, Q, Sum

from accounts.models import Account, ApiKey, UsageRecord

COLUMNS = ("day", "account", "key", "endpoint", "model", "requests", "prompt_tokens", "completion_tokens",
           "total_tokens", "errors", "rate_limited", "moderation_blocks")
_SUMMED = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "errors", "rate_limited",
           "moderation_blocks")
CONTENT_FILTER = "content_filter"
MODERATION_BLOCKED = Q(error_code=CONTENT_FILTER) | Q(finish_reason=CONTENT_FILTER)
# The longest range ``GET /v1/usage`` reports in one request (a leap year); operators' exports are unbounded.
API_MAX_DAYS = 366


class UtcDay(Func):
    """The UTC calendar day of a datetime column as ``YYYY-MM-DD`` text, computed by the database's own
    functions. Django's TruncDate would make SQLite call a Python function on every row (about 20 s for a
    million rows); Django stores aware datetimes on SQLite as UTC text, so the day is its first ten characters."""

    output_field = CharField()
    template = "CAST(CAST(%(expressions)s AS DATE) AS CHAR(10))"

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="substr(%(expressions)s, 1, 10)", **extra)

    def as_postgresql(self, compiler, connection, **extra):
        template = "to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        return self.as_sql(compiler, connection, template=template, **extra)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.utc)


def usage_rows(*, since: date | None = None, until: date | None = None, account: Account | None = None) -> list[dict]:
    """Usage grouped by UTC day, account, key, endpoint and model (inclusive dates; None: no bound).

    One query whatever the range: it reads the range of the created_at index and groups by the day the
    database computes (``UtcDay``) and by ids; names are looked up after. Days without usage cost nothing."""
    records = UsageRecord.objects.order_by()
    if account is not None:
        records = records.filter(account=account)
    if since is not None:
        records = records.filter(created_at__gte=_day_start(since))
    if until is not None and until < date.max:  # the day after the last representable one has no datetime
        records = records.filter(created_at__lt=_day_start(until + timedelta(days=1)))
    rows = list(
        records.annotate(day=UtcDay("created_at"))
        .values("day", "account_id", "api_key_id", "endpoint", "model")
        .annotate(
            requests=Count("id"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            errors=Count("id", filter=Q(status_code__gte=400)),
            rate_limited=Count("id", filter=Q(status_code=429)),
            moderation_blocks=Count("id", filter=MODERATION_BLOCKED),
        )
    )
    accounts = dict(Account.objects.filter(pk__in={r["account_id"] for r in rows}).values_list("pk", "name"))
    keys = dict(ApiKey.objects.filter(pk__in={r["api_key_id"] for r in rows}).values_list("pk", "lookup_id"))
    result = [
        {
            "day": row["day"],
            "account": accounts[row["account_id"]],
            "key": keys[row["api_key_id"]],
            "endpoint": row["endpoint"],
            "model": row["model"],
            "requests": row["requests"],
            "prompt_tokens": row["prompt_tokens"] or 0,
            "completion_tokens": row["completion_tokens"] or 0,
            "total_tokens": (row["prompt_tokens"] or 0) + (row["completion_tokens"] or 0),
            "errors": row["errors"],
            "rate_limited": row["rate_limited"],
            "moderation_blocks": row["moderation_blocks"],
        }
        for row in rows
    ]
    return sorted(result, key=lambda r: (r["day"], r["account"], r["key"], r["endpoint"], r["model"]))


def _group(rows: list[dict], field: str) -> list[dict]:
    sums: dict[str, dict] = defaultdict(lambda: dict.fromkeys(_SUMMED, 0))
    for row in rows:
        for name in _SUMMED:
            sums[row[field]][name] += row[name]
    return [{field: value, **totals} for value, totals in sorted(sums.items())]


def usage_report(*, since: date | None = None, until: date | None = None, account: Account | None = None) -> dict:
    rows = usage_rows(since=since, until=until, account=account)
    totals = dict.fromkeys(_SUMMED, 0)
    for row in rows:
        for name in _SUMMED:
            totals[name] += row[name]
    report = {
        "object": "usage",
        "start_date": since.isoformat() if since else None,
        "end_date": until.isoformat() if until else None,
        "totals": totals,
        "by_day": _group(rows, "day"),
        "by_key": _group(rows, "key"),
        "by_endpoint": _group(rows, "endpoint"),
        "by_model": _group(rows, "model"),
    }
    if account is None:
        report["by_account"] = _group(rows, "account")
    else:
        report["account"] = account.name
    return report


def usage_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
