"""Token quotas per account and per key, per UTC day and month.

A request reserves prompt tokens + max_tokens from every counter that applies before the model runs, and
settles to the real count afterwards, refunding the rest. Both are conditional UPDATEs in the database,
never read-modify-write in Python, so they hold across threads, workers and hosts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from django.db import transaction
from django.db.models import F, Value

from accounts.models import Account, ApiKey, QuotaCounter


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
