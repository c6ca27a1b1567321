"""Which action each category gets, for an account: built-in defaults, then the default policy's rules,
then the account's own rules (each layer overrides the categories it names)."""

from __future__ import annotations

from dataclasses import dataclass

from accounts.models import Account
from moderation.categories import CATEGORIES
from moderation.detectors import DEFAULT_THRESHOLD
from moderation.models import BLOCK, FLAG, ModerationPolicy

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


def policy_for(account: Account | None) -> EffectivePolicy:
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
