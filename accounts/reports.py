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

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate

from accounts.models import Account, UsageRecord

COLUMNS = ("day", "account", "key", "endpoint", "model", "requests", "prompt_tokens", "completion_tokens",
           "total_tokens", "errors", "rate_limited", "moderation_blocks")
_SUMMED = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "errors", "rate_limited",
           "moderation_blocks")
CONTENT_FILTER = "content_filter"
MODERATION_BLOCKED = Q(error_code=CONTENT_FILTER) | Q(finish_reason=CONTENT_FILTER)


def _bounds(since: date | None, until: date | None) -> Q:
    window = Q()
    if since:
        window &= Q(created_at__gte=datetime.combine(since, time.min, tzinfo=timezone.utc))
    if until:
        window &= Q(created_at__lt=datetime.combine(until + timedelta(days=1), time.min, tzinfo=timezone.utc))
    return window


def usage_rows(*, since: date | None = None, until: date | None = None, account: Account | None = None) -> list[dict]:
    """Usage grouped by UTC day, account, key, endpoint and model (inclusive dates)."""
    records = UsageRecord.objects.filter(_bounds(since, until))
    if account is not None:
        records = records.filter(account=account)
    grouped = (
        records.annotate(day=TruncDate("created_at"))
        .values("day", "account__name", "api_key__lookup_id", "endpoint", "model")
        .annotate(
            requests=Count("id"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            errors=Count("id", filter=Q(status_code__gte=400)),
            rate_limited=Count("id", filter=Q(status_code=429)),
            moderation_blocks=Count("id", filter=MODERATION_BLOCKED),
        )
        .order_by("day", "account__name", "api_key__lookup_id", "endpoint", "model")
    )
    return [
        {
            "day": row["day"].isoformat(),
            "account": row["account__name"],
            "key": row["api_key__lookup_id"],
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
        for row in grouped
    ]


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
