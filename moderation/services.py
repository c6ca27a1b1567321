"""Moderation services: judge text against an account's policy, log every non-allow decision, apply strikes.

Moderation judges text and never generates. Callers (the inference services) ask for a verdict on input
before the model runs and on output before it is released (see ``moderation.guard`` for streams).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction

from accounts import clock
from accounts.models import Account, ApiKey
from accounts.services import key_suspend, request_admit, request_settle
from moderation import allowed_counts
from moderation.categories import CATEGORIES
from moderation.detectors import Detection, count_tokens, detect_many, sentence_encoder
from moderation.models import ACTION_SEVERITY, ALLOW, BLOCK, REDACT, ModerationEvent
from moderation.policies import EffectivePolicy, policy_for

logger = logging.getLogger(__name__)

REDACTION_CHAR = "█"


class ModerationLogFailed(Exception):
    """The decision could not be logged; the caller must block rather than release unlogged text."""


@dataclass(frozen=True)
class Verdict:
    action: str
    text: str  # the text to release: redacted when action is "redact"
    categories: tuple[str, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def blocked(self) -> bool:
        return self.action == BLOCK


@dataclass(frozen=True)
class ModerationContext:
    """Who and what a check is for (for the log and strikes)."""

    account: Account | None
    api_key: ApiKey | None
    request_id: str
    endpoint: str


def _redact(text: str, detection: Detection, categories: set[str]) -> str:
    chars = list(text)
    for span in detection.spans:
        if span.category in categories:
            for index in range(max(0, span.start), min(len(chars), span.end)):
                if not chars[index].isspace():
                    chars[index] = REDACTION_CHAR
    return "".join(chars)


def verdict_from_detection(text: str, detection: Detection, policy: EffectivePolicy) -> Verdict:
    """The strictest action among the categories over their thresholds (a pure function)."""
    flagged = [c for c in CATEGORIES if detection.scores.get(c, 0.0) >= policy.rules[c].threshold]
    action = max((policy.rules[c].action for c in flagged), key=ACTION_SEVERITY.__getitem__, default=ALLOW)
    released = text
    if action == REDACT:
        redact_categories = {c for c in flagged if policy.rules[c].action == REDACT}
        released = _redact(text, detection, redact_categories)
        if released == text:  # nothing to mask was located: withhold rather than release it unmasked
            action, released = BLOCK, ""
    return Verdict(action=action, text=released, categories=tuple(flagged), scores=dict(detection.scores))


def _log(verdict: Verdict, *, original: str, direction: str, context: ModerationContext,
         count_allowed: bool = True) -> None:
    if verdict.action == ALLOW:
        if count_allowed:
            allowed_counts.count_allowed(direction)
        return
    try:
        with transaction.atomic():
            ModerationEvent.objects.create(
                request_id=context.request_id,
                account=context.account,
                api_key=context.api_key,
                endpoint=context.endpoint,
                direction=direction,
                action=verdict.action,
                categories=list(verdict.categories),
                scores={c: round(s, 4) for c, s in verdict.scores.items()},
                # Input with NUL is refused (platform/parsers.py); output can still hold one, and PostgreSQL
                # cannot store it: an unloggable output would be withheld as if blocked.
                text=original.replace("\x00", "\ufffd"),
                created_at=clock.now(),
            )
    except Exception as error:
        logger.error("Could not log a moderation decision (%s); blocking the response", type(error).__name__)
        raise ModerationLogFailed(str(error)) from error


def _apply_strikes(policy: EffectivePolicy, context: ModerationContext) -> None:
    if not policy.strike_limit or context.api_key is None:
        return
    since = clock.now() - timedelta(minutes=policy.strike_window_minutes)
    blocks = ModerationEvent.objects.filter(api_key=context.api_key, action=BLOCK, created_at__gte=since).count()
    if blocks >= policy.strike_limit:
        key_suspend(key=context.api_key)
        logger.warning("Key %s suspended after %s blocks", context.api_key.lookup_id, blocks)


def moderation_check(
    *, texts: list[str], direction: str, context: ModerationContext, policy: EffectivePolicy | None = None,
    count_allowed: bool = True, detect: Callable[[list[str]], list[Detection]] | None = None,
) -> list[Verdict]:
    """Judge each text under the account's policy; log what is not allowed before anything is released.

    Allowed texts are counted, unless ``count_allowed`` is false: a stream's windows are counted once, as one
    allowed output, when the stream ends (``moderation_count_allowed``). ``detect`` scores the texts (an
    engine may run it between its steps: ``Engine.run_exclusive``)."""
    policy = policy or policy_for(context.account)
    enabled = policy.check_input if direction == "input" else policy.check_output
    if not enabled or not texts:
        return [Verdict(action=ALLOW, text=text) for text in texts]
    verdicts = []
    for text, detection in zip(texts, (detect or moderation_scores)(texts)):
        verdict = verdict_from_detection(text, detection, policy)
        _log(verdict, original=text, direction=direction, context=context, count_allowed=count_allowed)
        verdicts.append(verdict)
    if any(v.blocked for v in verdicts):
        _apply_strikes(policy, context)
    return verdicts


def moderation_scores(texts: list[str]) -> list[Detection]:
    """The detectors' scores for each text (no policy, no log)."""
    return detect_many(texts)


def moderation_sentence_encoder():
    """The sentence encoder moderation reads text with (all-MiniLM-L6-v2, loaded once per process), for other
    apps that embed text with the same model (``/v1/embeddings``); see ``detectors.sentence_encoder``."""
    return sentence_encoder()


def moderation_count_allowed(direction: str) -> None:
    """Count one allowed text (e.g. a whole stream whose every window was allowed)."""
    allowed_counts.count_allowed(direction)


def moderation_classify(*, texts: list[str], account: Account | None) -> list[dict]:
    """``/v1/moderations`` results: scores for every category, flagged by the account's thresholds."""
    policy = policy_for(account)
    results = []
    for detection in detect_many(texts):
        categories = {c: detection.scores.get(c, 0.0) >= policy.rules[c].threshold for c in CATEGORIES}
        results.append(
            {
                "flagged": any(categories.values()),
                "categories": categories,
                "category_scores": {c: round(detection.scores.get(c, 0.0), 6) for c in CATEGORIES},
            }
        )
    return results


MODERATION_MODEL = "sluice-moderation-1"


def moderation_run(*, key: ApiKey, request_id: str, texts: list[str]) -> tuple[list[dict], dict[str, str]]:
    """A metered ``/v1/moderations`` request: admitted, classified, settled in the moderation model's tokens."""
    tokens = sum(count_tokens(text) for text in texts)
    admission = request_admit(
        key=key, request_id=request_id, endpoint="moderations", model=MODERATION_MODEL, prompt_tokens=tokens,
        max_tokens=0,
    )
    try:
        results = moderation_classify(texts=texts, account=key.account)
    except Exception:
        request_settle(admission=admission, prompt_tokens=0, completion_tokens=0, status_code=500,
                       error_code="moderation_error")
        raise
    request_settle(admission=admission, prompt_tokens=tokens, completion_tokens=0, status_code=200)
    return results, admission.headers


def moderation_events_of(*, account: Account, request_id: str | None = None, action: str | None = None,
                         limit: int = 100) -> list[ModerationEvent]:
    """The account's own flag, redact and block decisions, newest first (one request's or action's, if named)."""
    events = ModerationEvent.objects.filter(account=account).select_related("api_key")
    if request_id is not None:
        events = events.filter(request_id=request_id)
    if action is not None:
        events = events.filter(action=action)
    return list(events.order_by("-created_at", "-pk")[:limit])
