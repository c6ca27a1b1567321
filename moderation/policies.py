"""Which action each category gets, for an account: built-in defaults, then the default policy's rules,
then the account's own rules (each layer overrides the categories it names).

A process reuses what it read for ``SLUICE_POLICY_CACHE_S`` seconds (every request needs its policy, and it
changes rarely); saving or deleting a policy or rule forgets them in the saving process at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db.models.signals import post_delete, post_save

from accounts.models import Account
from moderation.categories import CATEGORIES
from moderation.detectors import DEFAULT_THRESHOLD
from moderation.models import BLOCK, FLAG, ModerationPolicy, PolicyRule

# Out of the box: block what no deployment wants to serve, log the rest for review.
BUILT_IN_ACTIONS = {
    "harassment": FLAG,
    "harassment/threatening": BLOCK,
    "hate": FLAG,
    "hate/threatening": BLOCK,
    "illicit": FLAG,
    "illicit/violent": BLOCK,
    "self-harm": FLAG,
    "self-harm/intent": FLAG,
    "self-harm/instructions": BLOCK,
    "sexual": FLAG,
    "sexual/minors": BLOCK,
    "violence": FLAG,
    "violence/graphic": BLOCK,
}


@dataclass(frozen=True)
class Rule:
    threshold: float
    action: str


@dataclass(frozen=True)
class EffectivePolicy:
    rules: dict[str, Rule]
    check_input: bool = True
    check_output: bool = True
    strike_limit: int = 0
    strike_window_minutes: int = 60


_cached: dict[int | None, tuple[EffectivePolicy, float]] = {}
_cache_lock = threading.Lock()


def policy_for(account: Account | None) -> EffectivePolicy:
    ttl = settings.SLUICE_POLICY_CACHE_S
    account_id = account.pk if account is not None else None
    if ttl > 0:
        with _cache_lock:
            entry = _cached.get(account_id)
        if entry is not None and time.monotonic() - entry[1] < ttl:
            return entry[0]
    policy = _read_policy(account)
    if ttl > 0:
        with _cache_lock:
            if len(_cached) >= 10_000:
                _cached.clear()
            _cached[account_id] = (policy, time.monotonic())
    return policy


def policy_cache_clear(**_signal) -> None:
    with _cache_lock:
        _cached.clear()


for _model in (ModerationPolicy, PolicyRule):
    post_save.connect(policy_cache_clear, sender=_model, dispatch_uid=f"policy-cache-{_model.__name__}-save")
    post_delete.connect(policy_cache_clear, sender=_model, dispatch_uid=f"policy-cache-{_model.__name__}-delete")


def _read_policy(account: Account | None) -> EffectivePolicy:
    rules = {category: Rule(DEFAULT_THRESHOLD, BUILT_IN_ACTIONS[category]) for category in CATEGORIES}
    settings_from = None
    layers = ModerationPolicy.objects.filter(account__isnull=True)
    if account is not None:
        layers = layers | ModerationPolicy.objects.filter(account=account)
    # The default policy first, the account's own last (so it wins).
    for policy in sorted(layers.prefetch_related("rules"), key=lambda p: p.account_id is not None):
        for rule in policy.rules.all():
            rules[rule.category] = Rule(rule.threshold, rule.action)
        settings_from = policy
    if settings_from is None:
        return EffectivePolicy(rules=rules)
    return EffectivePolicy(
        rules=rules,
        check_input=settings_from.check_input,
        check_output=settings_from.check_output,
        strike_limit=settings_from.strike_limit,
        strike_window_minutes=settings_from.strike_window_minutes,
    )
