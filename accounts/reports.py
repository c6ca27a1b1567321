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

from django.db import connection
from django.db.models import CharField, Count, Max, Min, Q, Sum, Value

from accounts.models import Account, ApiKey, UsageRecord

COLUMNS = ("day", "account", "key", "endpoint", "model", "requests", "prompt_tokens", "completion_tokens",
           "total_tokens", "errors", "rate_limited", "moderation_blocks")
_SUMMED = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "errors", "rate_limited",
           "moderation_blocks")
CONTENT_FILTER = "content_filter"
MODERATION_BLOCKED = Q(error_code=CONTENT_FILTER) | Q(finish_reason=CONTENT_FILTER)
# The longest range ``GET /v1/usage`` reports in one request (a leap year); operators' exports are unbounded.
API_MAX_DAYS = 366


# Placeholders in the one compiled day query (see _day_parts); no real row is ever this old.
_FIRST = datetime(1001, 1, 1, tzinfo=timezone.utc)
_LAST = datetime(1001, 1, 2, tzinfo=timezone.utc)
_LABEL = "1001-01-01"
_MAX_UNION = 200  # parts per compound SELECT (SQLite allows 500)


def _days(records, since: date | None, until: date | None) -> list[date]:
    if since is None or until is None:
        span = records.aggregate(first=Min("created_at"), last=Max("created_at"))
        if span["first"] is None:
            return []
        since = since or span["first"].astimezone(timezone.utc).date()
        until = until or span["last"].astimezone(timezone.utc).date()
    return [since + timedelta(days=n) for n in range((until - since).days + 1)]


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=timezone.utc)
    # The last representable day has no next midnight: it ends at its last microsecond.
    stop = start + timedelta(days=1) if day < date.max else datetime.combine(day, time.max, tzinfo=timezone.utc)
    return start, stop


def _day_parts(records, days: list[date]) -> list[dict]:
    """One day's rows grouped by ids, for every day: the ORM compiles the day's query once with placeholder
    bounds, and each statement repeats it per day (UNION ALL, up to ``_MAX_UNION`` days) with the real ones."""
    template = (
        records.filter(created_at__gte=_FIRST, created_at__lt=_LAST)
        .annotate(day=Value(_LABEL, output_field=CharField()))
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
    sql, params = template.query.sql_with_params()
    adapt = connection.ops.adapt_datetimefield_value
    placeholders = {adapt(_FIRST): "start", adapt(_LAST): "stop", _LABEL: "label"}
    slots = [placeholders.get(value) if isinstance(value, (str, datetime)) else None for value in params]
    if sorted(filter(None, slots)) != ["label", "start", "stop"]:
        raise RuntimeError("usage_rows: unexpected query parameters")
    rows: list[dict] = []
    for lo in range(0, len(days), _MAX_UNION):
        chunk = days[lo : lo + _MAX_UNION]
        statement_params: list = []
        for day in chunk:
            start, stop = _day_bounds(day)
            values = {"start": adapt(start), "stop": adapt(stop), "label": day.isoformat()}
            statement_params += [values[slot] if slot else value for slot, value in zip(slots, params)]
        with connection.cursor() as cursor:
            cursor.execute(" UNION ALL ".join([sql] * len(chunk)), statement_params)
            names = [column[0] for column in cursor.description]
            rows += [dict(zip(names, row)) for row in cursor.fetchall()]
    return rows


def usage_rows(*, since: date | None = None, until: date | None = None, account: Account | None = None) -> list[dict]:
    """Usage grouped by UTC day, account, key, endpoint and model (inclusive dates; None: from the first or
    to the last row).

    Each day's part reads that day's range of the created_at index and groups by ids (names are looked up
    after); the parts run as one statement per ``_MAX_UNION`` days, so a year is two queries, not 366. A
    computed day in the GROUP BY instead sorts the whole range at once: measured twice as slow on SQLite for 30
    busy days (benchmarks/usage_report_bench.py), and TruncDate calls a Python function per row there."""
    records = UsageRecord.objects.order_by()
    if account is not None:
        records = records.filter(account=account)
    rows = _day_parts(records, _days(records, since, until))
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
