"""The operator's dashboard: what the service did over a period, aggregated in the database.

Requests and tokens per UTC day and per hour, the heaviest accounts and keys, error and 429 rates and latency
percentiles per endpoint, moderation events per category and action, and the engine's state. The dashboard
sits at the top of the import chain, so it reads accounts, moderation and the engine alike.

Every figure is aggregated by the database, and every usage query is shaped to read one index range in
order with nothing to sort (see the ``usage_dash_*`` indexes on ``UsageRecord``): a GROUP BY on a computed
day or on an unindexed column makes SQLite sort every row of the period, which dominates with a million rows.
So the series are one aggregate per time bucket (a UNION ALL of index ranges), keys and accounts are
aggregated per key by a correlated subquery (one index seek each), endpoints per endpoint, and percentiles
are read at their rank from the (endpoint, latency) index. Python only fills empty buckets with zeros and
reshapes the few rows that come back.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from django.db import connection
from django.db.models import Count, F, IntegerField, OuterRef, Q, QuerySet, Subquery, Sum, Value

from accounts.models import Account, ApiKey, UsageRecord
from inference.engines.factory import engine_if_loaded, engine_status
from inference.fair_sharing import account_shares
from moderation.categories import CATEGORIES
from moderation.models import ACTIONS, ModerationEvent

DEFAULT_DAYS = 30
HOURS = 48
TOP = 10
PERCENTILES = (50, 95)
_MAX_UNION = 200  # parts per compound SELECT (SQLite allows 500)
# Placeholders in the one compiled bucket query (see usage_series); no real row is ever this old.
_FIRST = datetime(1001, 1, 1, tzinfo=timezone.utc)
_LAST = datetime(1002, 1, 1, tzinfo=timezone.utc)
_TAG = 987_654_321
_ERROR = Q(status_code__gte=400)
_RATE_LIMITED = Q(status_code=429)
# Latency is that of the requests served: refused ones (limits, bad input) end at once and would only drag
# the percentiles down.
_SERVED = Q(status_code__lt=400, latency_ms__isnull=False)


@dataclass(frozen=True)
class DashboardPeriod:
    """Inclusive UTC dates, and optionally one account."""

    since: date
    until: date
    account: Account | None = None

    @property
    def start(self) -> datetime:
        return datetime.combine(self.since, time.min, tzinfo=timezone.utc)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.until + timedelta(days=1), time.min, tzinfo=timezone.utc)

    @property
    def days(self) -> list[date]:
        return [self.since + timedelta(days=n) for n in range((self.until - self.since).days + 1)]


def usage_records(period: DashboardPeriod, *, bounded: bool = True) -> QuerySet:
    """The period's usage rows (of its account, if any); ``bounded=False`` leaves out the time bounds, for
    callers that set their own (two ranges on one column would let the database pick the wider one)."""
    records = UsageRecord.objects.order_by()
    if bounded:
        records = records.filter(created_at__gte=period.start, created_at__lt=period.end)
    if period.account is not None:
        records = records.filter(account=period.account)
    return records


def _counts() -> dict:
    # Count indexed columns (or *), never the id: PostgreSQL indexes hold no id, so it would read the table.
    return dict(
        requests=Count("*"),
        prompt_tokens=Sum("prompt_tokens"),
        completion_tokens=Sum("completion_tokens"),
        errors=Count("status_code", filter=_ERROR),
        rate_limited=Count("status_code", filter=_RATE_LIMITED),
    )


def _clean(row: dict) -> dict:
    return {
        "requests": row["requests"],
        "prompt_tokens": row["prompt_tokens"] or 0,
        "completion_tokens": row["completion_tokens"] or 0,
        "errors": row["errors"],
        "rate_limited": row["rate_limited"],
    }


def _zero() -> dict:
    return {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "errors": 0, "rate_limited": 0}


def _rates(counts: dict) -> dict:
    requests = counts["requests"]
    return {
        "error_rate": counts["errors"] / requests if requests else 0.0,
        "rate_limited_rate": counts["rate_limited"] / requests if requests else 0.0,
    }


def _union_rows(parts: list[QuerySet]) -> list[dict]:
    rows: list[dict] = []
    for lo in range(0, len(parts), _MAX_UNION):
        chunk = parts[lo : lo + _MAX_UNION]
        rows += list(chunk[0].union(*chunk[1:], all=True)) if len(chunk) > 1 else list(chunk[0])
    return rows


def day_buckets(period: DashboardPeriod) -> list[tuple[str, datetime]]:
    return [(day.isoformat(), datetime.combine(day, time.min, tzinfo=timezone.utc)) for day in period.days]


def hour_buckets(end: datetime) -> list[tuple[str, datetime]]:
    """The last ``HOURS`` whole hours, the last one being the hour that contains ``end`` (exclusive)."""
    last = (end - timedelta(microseconds=1)).astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    starts = [last - timedelta(hours=n) for n in range(HOURS - 1, -1, -1)]
    return [(start.strftime("%Y-%m-%d %H:00"), start) for start in starts]


def usage_series(records: QuerySet, *, buckets: list[tuple[str, datetime]], end: datetime) -> list[dict]:
    """Requests, tokens, errors and 429s per time bucket (label and start; the last bucket ends at ``end``),
    every bucket present, zeros where nothing happened. ``records`` carries no time bounds of its own.

    The ORM compiles one bucket's aggregate with placeholder bounds; the statement repeats it per bucket with
    the real bounds as parameters (compiling 78 querysets would cost more than running them)."""
    stops = [start for _, start in buckets[1:]] + [end]
    template = (
        records.filter(created_at__gte=_FIRST, created_at__lt=_LAST)
        .annotate(bucket=Value(_TAG, output_field=IntegerField()))
        .values("bucket")
        .annotate(**_counts())
    )
    sql, params = template.query.sql_with_params()
    adapt = connection.ops.adapt_datetimefield_value
    placeholders = {adapt(_FIRST): "start", adapt(_LAST): "stop", _TAG: "index"}
    slots = [placeholders.get(value) if isinstance(value, (str, int, datetime)) else None for value in params]
    if sorted(filter(None, slots)) != ["index", "start", "stop"]:
        raise RuntimeError("usage_series: unexpected query parameters")
    found: dict[int, dict] = {}
    ranges = list(enumerate(zip((start for _, start in buckets), stops)))
    for lo in range(0, len(ranges), _MAX_UNION):
        chunk = ranges[lo : lo + _MAX_UNION]
        values = {"start": None, "stop": None, "index": None}
        statement_params: list = []
        for index, (start, stop) in chunk:
            values.update(start=adapt(start), stop=adapt(stop), index=index)
            statement_params += [values[slot] if slot else value for slot, value in zip(slots, params)]
        with connection.cursor() as cursor:
            cursor.execute(" UNION ALL ".join([sql] * len(chunk)), statement_params)
            names = [column[0] for column in cursor.description]
            for row in cursor.fetchall():
                row = dict(zip(names, row))
                found[row["bucket"]] = _clean(row)
    return [{"bucket": label, **found.get(index, _zero())} for index, (label, _) in enumerate(buckets)]


def key_usage(period: DashboardPeriod) -> list[dict]:
    """Tokens per key over the period, heaviest first (keys without tokens left out).

    A correlated subquery per key sums that key's rows from the (api_key, created_at, tokens) index alone."""
    tokens = (
        UsageRecord.objects.filter(api_key=OuterRef("pk"), created_at__gte=period.start, created_at__lt=period.end)
        .order_by()
        .values("api_key")
        .annotate(total=Sum(F("prompt_tokens") + F("completion_tokens")))
        .values("total")
    )
    keys = ApiKey.objects.all() if period.account is None else ApiKey.objects.filter(account=period.account)
    rows = (
        keys.annotate(tokens=Subquery(tokens))
        .order_by(F("tokens").desc(nulls_last=True), "pk")
        .values("pk", "name", "last_four", "account_id", "account__name", "tokens")
    )
    return [
        {
            "id": row["pk"],
            "account_id": row["account_id"],
            "account": row["account__name"],
            "name": f"{row['account__name']} / {row['name'] or 'key'} (…{row['last_four']})",
            "tokens": row["tokens"],
        }
        for row in rows
        if row["tokens"]
    ]


def top_accounts(keys: list[dict], *, limit: int = TOP) -> list[dict]:
    """Accounts by tokens, from the per-key sums (a key belongs to one account)."""
    sums: dict[int, dict] = defaultdict(lambda: {"tokens": 0})
    for key in keys:
        account = sums[key["account_id"]]
        account.update(id=key["account_id"], name=key["account"])
        account["tokens"] += key["tokens"]
    return sorted(sums.values(), key=lambda a: (-a["tokens"], a["id"]))[:limit]


def endpoint_names() -> list[str]:
    """Every endpoint that has usage rows, by a loose index scan: one seek per endpoint on the
    (endpoint, latency) index, instead of reading every row for a DISTINCT."""
    table = connection.ops.quote_name(UsageRecord._meta.db_table)
    sql = f"""
        WITH RECURSIVE names(endpoint) AS (
            SELECT MIN(endpoint) FROM {table}
            UNION ALL
            SELECT (SELECT MIN(endpoint) FROM {table} WHERE endpoint > names.endpoint)
            FROM names WHERE names.endpoint IS NOT NULL
        )
        SELECT endpoint FROM names WHERE endpoint IS NOT NULL
    """
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return [row[0] for row in cursor.fetchall()]


def latency_percentile(records: QuerySet, *, endpoint: str, served: int, percentile: int) -> int | None:
    """The nearest-rank percentile (ms) of served requests on ``endpoint``: the value at rank ceil(p% of n),
    read with ORDER BY latency LIMIT 1 OFFSET rank-1, which walks the (endpoint, latency) index in order.

    The walk checks the dates inside the index, so it passes the endpoint's rows of every date up to the
    rank: its cost grows with the history kept, where the other queries grow with the period shown."""
    if served <= 0:
        return None
    rank = -(-served * percentile // 100)  # ceil without floats
    ordered = records.filter(_SERVED, endpoint=endpoint).order_by("latency_ms").values_list("latency_ms", flat=True)
    return ordered[rank - 1 : rank].first()


def endpoint_stats(records: QuerySet) -> list[dict]:
    """Per endpoint: requests, tokens, errors and 429s with their rates, and latency percentiles."""
    # One aggregate per endpoint (an index range each), not a GROUP BY that would sort the period's rows.
    parts = [
        records.filter(endpoint=name)
        .annotate(name=Value(name))
        .values("name")
        .annotate(**_counts(), served=Count("latency_ms", filter=_SERVED))  # COUNT skips null latencies
        for name in endpoint_names()
    ]
    result = []
    for row in _union_rows(parts):
        if not row["requests"]:
            continue
        stats = {"endpoint": row["name"], **_clean(row), "served": row["served"]}
        stats.update(_rates(stats))
        for p in PERCENTILES:
            stats[f"p{p}_ms"] = latency_percentile(records, endpoint=row["name"], served=row["served"], percentile=p)
        result.append(stats)
    return sorted(result, key=lambda s: (-s["requests"], s["endpoint"]))


def moderation_summary(period: DashboardPeriod) -> dict:
    """Moderation events of the period per category and action (an event may name several categories)."""
    events = ModerationEvent.objects.filter(created_at__gte=period.start, created_at__lt=period.end)
    if period.account is not None:
        events = events.filter(account=period.account)
    # Few distinct category lists exist, so grouping by the list and splitting it here stays small.
    grouped = events.order_by().values("action", "categories").annotate(n=Count("id"))
    actions = [a for a, _ in ACTIONS if a != "allow"]
    by_category = {c: dict.fromkeys(actions, 0) for c in CATEGORIES}
    by_action = dict.fromkeys(actions, 0)
    for row in grouped:
        by_action[row["action"]] = by_action.get(row["action"], 0) + row["n"]
        for category in row["categories"] or []:
            counts = by_category.setdefault(category, dict.fromkeys(actions, 0))
            counts[row["action"]] = counts.get(row["action"], 0) + row["n"]
    return {
        "actions": actions,
        "by_action": by_action,
        "by_category": [{"category": c, **counts} for c, counts in by_category.items()],
        "total": sum(by_action.values()),
    }


def engine_summary() -> dict:
    engine = engine_if_loaded()
    summary = {"status": engine_status(), "model": None, "context_window": None, "stats": {}}
    if engine is not None:
        summary.update(model=engine.model_id, context_window=getattr(engine, "context_window", None))
        try:
            summary["stats"] = {k: v for k, v in dict(engine.stats()).items() if isinstance(v, (int, float, str))}
        except Exception:  # the dashboard must render even when the engine cannot report
            summary["stats"] = {}
    return summary


def sharing_summary() -> list[dict]:
    """This worker's engines: per model and account, rows running, requests queued and the recent share."""
    try:
        rows = account_shares()
    except Exception:  # the dashboard must render even when an engine cannot report
        return []
    ids = [int(row["account"]) for row in rows if row["account"].isdigit()]
    names = dict(Account.objects.filter(pk__in=ids).values_list("pk", "name")) if ids else {}
    for row in rows:
        account = row["account"]
        row["name"] = names.get(int(account), f"account {account}") if account.isdigit() else "(no account)"
    return rows


def dashboard_build(*, period: DashboardPeriod, now: datetime, usage: bool = True, moderation: bool = True) -> dict:
    """Everything the dashboard shows for ``period``; ``usage``/``moderation`` false leave out (and skip the
    queries of) what the viewer may not see."""
    data: dict = {
        "since": period.since.isoformat(),
        "until": period.until.isoformat(),
        "account": period.account.name if period.account else None,
        "engine": engine_summary(),
    }
    if usage:
        records, unbounded = usage_records(period), usage_records(period, bounded=False)
        daily = usage_series(unbounded, buckets=day_buckets(period), end=period.end)
        hourly_end = min(now, period.end)
        hourly = usage_series(unbounded, buckets=hour_buckets(hourly_end), end=hourly_end)
        totals = _zero()
        for day in daily:
            for name in totals:
                totals[name] += day[name]
        totals.update(_rates(totals))
        keys = key_usage(period)
        data.update(
            totals=totals,
            daily=daily,
            hourly=hourly,
            top_accounts=top_accounts(keys) if period.account is None else [],
            top_keys=keys[:TOP],
            endpoints=endpoint_stats(records),
            sharing=sharing_summary(),
        )
    if moderation:
        data["moderation"] = moderation_summary(period)
    return data
