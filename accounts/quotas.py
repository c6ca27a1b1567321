"""Token quotas per account and per key, per UTC day and month.

A request reserves prompt tokens + max_tokens from every counter that applies before the model runs, and
settles to the real count afterwards, refunding the rest. Both are conditional UPDATEs in the database,
never read-modify-write in Python, so they hold across threads, workers and hosts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from django.db import transaction
from django.db.models import F, Q, Sum, Value

from accounts.models import Account, ApiKey, QuotaCounter, UsageRecord


class QuotaExceeded(Exception):
    def __init__(self, message: str, counter: QuotaCounter):
        super().__init__(message)
        self.counter = counter


@dataclass(frozen=True)
class QuotaRule:
    account: Account
    api_key: ApiKey | None
    period: str
    granted: int

    @property
    def scope(self) -> str:
        return f"key:{self.api_key.pk}" if self.api_key else f"account:{self.account.pk}"

    def describe(self) -> str:
        owner = "API key" if self.api_key else "account"
        return f"{'daily' if self.period == QuotaCounter.DAY else 'monthly'} token quota of this {owner}"


def period_start(period: str, moment: datetime) -> date:
    day = moment.date()  # moments are UTC (USE_TZ, TIME_ZONE=UTC)
    return day if period == QuotaCounter.DAY else day.replace(day=1)


def quota_rules(key: ApiKey) -> list[QuotaRule]:
    account = key.account
    rules = []
    for period, field in ((QuotaCounter.DAY, "daily_token_quota"), (QuotaCounter.MONTH, "monthly_token_quota")):
        if getattr(account, field) is not None:
            rules.append(QuotaRule(account, None, period, getattr(account, field)))
        if getattr(key, field) is not None:
            rules.append(QuotaRule(account, key, period, getattr(key, field)))
    return rules


def _counter_for(rule: QuotaRule, moment: datetime) -> QuotaCounter:
    counter, _ = QuotaCounter.objects.get_or_create(
        scope=rule.scope,
        period=rule.period,
        period_start=period_start(rule.period, moment),
        defaults={"account": rule.account, "api_key": rule.api_key, "granted": rule.granted},
    )
    return counter


def quota_reserve(*, key: ApiKey, tokens: int, moment: datetime) -> list[int]:
    """Reserve ``tokens`` from every applicable counter, all or none. Returns the counter ids.

    Must run inside a transaction: a refusal by one counter rolls back the others' reservations.
    """
    assert transaction.get_connection().in_atomic_block, "quota_reserve must run in transaction.atomic()"
    counter_ids = []
    for rule in quota_rules(key):
        counter = _counter_for(rule, moment)
        # One conditional UPDATE: succeeds only if the tokens still fit under the current grant.
        reserved = QuotaCounter.objects.filter(
            pk=counter.pk, used__lte=Value(rule.granted - tokens) - F("reserved")
        ).update(reserved=F("reserved") + tokens, granted=rule.granted)
        if not reserved:
            counter.refresh_from_db()
            raise QuotaExceeded(
                f"You exceeded your current quota: the {rule.describe()} ({rule.granted} tokens) has "
                f"{max(0, rule.granted - counter.used - counter.reserved)} tokens left and this request needs "
                f"up to {tokens}. Lower max_tokens or wait for the next period.",
                counter,
            )
        counter_ids.append(counter.pk)
    return counter_ids


def quota_settle(*, counter_ids: list[int], reserved: int, used: int) -> None:
    """Turn a reservation into use: one UPDATE over all the request's counters, refunding the rest."""
    if counter_ids:
        QuotaCounter.objects.filter(pk__in=counter_ids).update(
            reserved=F("reserved") - reserved, used=F("used") + min(used, reserved)
        )


def _next_period_start(period: str, start: date) -> date:
    if period == QuotaCounter.DAY:
        return date.fromordinal(start.toordinal() + 1)
    return date(start.year + (start.month == 12), start.month % 12 + 1, 1)


def _charged(account: Account, key: ApiKey | None, since: date, moment: datetime) -> int:
    start = datetime.combine(since, datetime.min.time(), tzinfo=moment.tzinfo)
    rows = UsageRecord.objects.filter(account=account, created_at__gte=start, created_at__lte=moment,
                                      state=UsageRecord.SETTLED)
    if key is not None:
        rows = rows.filter(api_key=key)
    totals = rows.aggregate(prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"))
    return (totals["prompt"] or 0) + (totals["completion"] or 0)


def quota_status(*, account: Account, moment: datetime) -> list[dict]:
    """The account's token quotas and those of its keys that set their own, for the periods containing
    ``moment``: granted, used, reserved (requests running now), remaining and when the period resets (UTC).

    Read from the same counters that requests reserve from, so it is what the next request will meet."""
    owners: list[tuple[str, ApiKey | None]] = [(f"account:{account.pk}", None)]
    keys = ApiKey.objects.filter(account=account, revoked_at__isnull=True).filter(
        Q(daily_token_quota__isnull=False) | Q(monthly_token_quota__isnull=False)).order_by("created_at")
    owners += [(f"key:{key.pk}", key) for key in keys]
    starts = {period: period_start(period, moment) for period in (QuotaCounter.DAY, QuotaCounter.MONTH)}
    counters = {
        (counter.scope, counter.period): counter
        for counter in QuotaCounter.objects.filter(
            scope__in=[scope for scope, _ in owners],
            period__in=list(starts),
        ).filter(Q(period=QuotaCounter.DAY, period_start=starts[QuotaCounter.DAY])
                 | Q(period=QuotaCounter.MONTH, period_start=starts[QuotaCounter.MONTH]))
    }
    status = []
    for scope, key in owners:
        for period, field in ((QuotaCounter.DAY, "daily_token_quota"), (QuotaCounter.MONTH, "monthly_token_quota")):
            granted = getattr(key if key is not None else account, field)
            if key is not None and granted is None:
                continue
            counter = counters.get((scope, period))
            # Unlimited: no counter is kept, so say what the usage rows charged in the period.
            used = counter.used if counter else _charged(account, key, starts[period], moment)
            reserved = counter.reserved if counter else 0
            resets = _next_period_start(period, starts[period])
            status.append({
                "key": key,
                "period": period,
                "granted": granted,
                "used": used,
                "reserved": reserved,
                "remaining": None if granted is None else max(0, granted - used - reserved),
                "fraction_used": None if not granted else min(1.0, (used + reserved) / granted),
                "period_start": starts[period],
                "resets_at": datetime.combine(resets, datetime.min.time(), tzinfo=moment.tzinfo),
            })
    return status
