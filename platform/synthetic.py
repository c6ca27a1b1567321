"""A realistic synthetic usage history, for demos and for measuring the dashboard with many rows.

The traffic follows what a small API business sees: a few accounts send most of the requests (Zipf), each
account's first key does most of its work, traffic peaks in the working hours of the day, dips at the
weekend and grows over the period; chat completions dominate; some requests are refused (rate limits,
quotas, bad input, the content policy), a few fail (an overloaded engine, short incidents), and latency
grows with the tokens generated. Moderation events accompany blocked requests, plus flags and redactions.

Rows are generated with numpy (vectorised, seeded, reproducible) and written with ``bulk_create`` in
batches, each batch in its own transaction. Every synthetic request id starts with ``synth-``, so
``synthetic_history_clear`` removes exactly what was loaded.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import transaction

from accounts.models import Account, ApiKey, UsageRecord
from accounts.services import account_get_or_create, key_create
from moderation.categories import CATEGORIES
from moderation.models import BLOCK, FLAG, INPUT, OUTPUT, REDACT, ModerationEvent

REQUEST_ID_PREFIX = "synth-"
MODERATION_MODEL = "sluice-moderation-1"
CONTENT_FILTER = "content_filter"

ACCOUNT_NAMES = (
    "northwind", "globex", "initech", "umbrella-labs", "hooli", "stark-industries", "wayne-analytics", "tyrell",
    "cyberdyne", "soylent", "vandelay", "acme-research", "pied-piper", "massive-dynamic", "aperture", "black-mesa",
    "oscorp", "monarch", "wonka", "dunder-mifflin", "gringotts", "nakatomi", "prestige-worldwide", "sirius-cyber",
    "virtucon", "weyland", "yoyodyne", "zorg", "bluth", "krusty",
)
# endpoint, share of requests
ENDPOINTS = (
    ("chat.completions", 0.66),
    ("completions", 0.14),
    ("moderations", 0.09),
    ("generate", 0.05),
    ("models", 0.04),
    ("usage", 0.015),
    ("keys", 0.005),
)
GENERATING = ("chat.completions", "completions", "generate")
MAX_TOKENS = ((128, 0.2), (256, 0.45), (512, 0.27), (1024, 0.08))
# Categories of moderation events, by how often they fire.
CATEGORY_WEIGHTS = {
    "harassment": 8, "harassment/threatening": 3, "hate": 4, "hate/threatening": 1, "illicit": 5,
    "illicit/violent": 1.5, "self-harm": 2, "self-harm/intent": 1, "self-harm/instructions": 0.5, "sexual": 6,
    "sexual/minors": 0.3, "violence": 5, "violence/graphic": 2,
}


@dataclass(frozen=True)
class LoadResult:
    usage_rows: int
    moderation_events: int
    accounts: int
    keys: int
    start: datetime
    end: datetime


def _weights(values) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return array / array.sum()


def _accounts_and_keys(count: int, rng: np.random.Generator) -> list[tuple[Account, list[ApiKey]]]:
    """``count`` accounts (existing ones of the same names are reused), each with one to six keys."""
    result = []
    for index in range(count):
        base = ACCOUNT_NAMES[index % len(ACCOUNT_NAMES)]
        name = base if index < len(ACCOUNT_NAMES) else f"{base}-{index // len(ACCOUNT_NAMES) + 1}"
        account = account_get_or_create(name=name)
        keys = list(ApiKey.objects.filter(account=account).order_by("created_at", "pk"))
        wanted = int(rng.integers(1, 7)) if index else 6
        for number in range(len(keys), wanted):
            keys.append(key_create(account=account, name=("production", "staging", "batch", "ci", "notebook",
                                                            "partner")[number]).key)
        result.append((account, keys))
    return result


def _hour_weights(start: datetime, hours: int, rng: np.random.Generator) -> np.ndarray:
    moments = [start + timedelta(hours=h) for h in range(hours)]
    hour_of_day = np.array([m.hour for m in moments])
    weekend = np.array([m.weekday() >= 5 for m in moments])
    diurnal = 1.0 + 0.7 * np.sin(2 * np.pi * (hour_of_day - 9) / 24)  # peaks mid-afternoon UTC
    growth = np.linspace(0.6, 1.0, hours)
    noise = rng.lognormal(0.0, 0.15, hours)
    return _weights(np.clip(diurnal, 0.15, None) * np.where(weekend, 0.6, 1.0) * growth * noise)


def _category_lists(count: int, rng: np.random.Generator) -> list[list[str]]:
    names = [c for c in CATEGORIES if c in CATEGORY_WEIGHTS]
    probabilities = _weights([CATEGORY_WEIGHTS[c] for c in names])
    first = rng.choice(len(names), size=count, p=probabilities)
    second = rng.choice(len(names), size=count, p=probabilities)
    two = rng.random(count) < 0.2
    return [
        sorted({names[a], names[b]}) if pair else [names[a]]
        for a, b, pair in zip(first.tolist(), second.tolist(), two.tolist())
    ]


def synthetic_history_load(
    *,
    rows: int,
    days: int,
    accounts: int,
    end: datetime,
    seed: int = 0,
    batch_size: int = 10_000,
    progress: Callable[[int, int], None] | None = None,
) -> LoadResult:
    """Write ``rows`` usage rows spread over the ``days`` before ``end``, with their moderation events."""
    rng = np.random.default_rng(seed)
    start = end - timedelta(days=days)
    owners = _accounts_and_keys(accounts, rng)
    model_id = settings.SLUICE_MODEL_ID
    tag = secrets.token_hex(3)

    # When: rows per hour by weight, then uniformly within the hour, in time order.
    hours = days * 24
    per_hour = rng.multinomial(rows, _hour_weights(start, hours, rng))
    offsets_us = np.repeat(np.arange(hours, dtype=np.int64) * 3_600_000_000, per_hour)
    offsets_us += rng.integers(0, 3_600_000_000, rows)
    offsets_us.sort()  # each row stays within its hour
    hour_of_row = offsets_us // 3_600_000_000

    # Who: Zipf over accounts, then over each account's keys.
    account_of_row = rng.choice(len(owners), size=rows, p=_weights([1 / (i + 1) ** 1.1 for i in range(len(owners))]))
    key_of_row = np.empty(rows, dtype=np.int64)
    for index, (_, keys) in enumerate(owners):
        mask = account_of_row == index
        key_ids = np.array([k.pk for k in keys])
        key_of_row[mask] = rng.choice(key_ids, size=int(mask.sum()), p=_weights([1 / (j + 1) ** 1.5 for j in range(len(keys))]))
    account_ids = np.array([a.pk for a, _ in owners])[account_of_row]

    # What: endpoint, tokens, latency.
    endpoint_names = [e for e, _ in ENDPOINTS]
    endpoint_of_row = rng.choice(len(ENDPOINTS), size=rows, p=_weights([w for _, w in ENDPOINTS]))
    generating = np.isin(endpoint_of_row, [endpoint_names.index(e) for e in GENERATING])
    moderating = endpoint_of_row == endpoint_names.index("moderations")
    max_tokens = rng.choice([m for m, _ in MAX_TOKENS], size=rows, p=_weights([w for _, w in MAX_TOKENS]))
    prompt = np.where(generating, np.clip(rng.lognormal(np.log(180), 0.9, rows), 5, 4000), 0)
    prompt = np.where(moderating, np.clip(rng.lognormal(np.log(60), 0.8, rows), 1, 2000), prompt).astype(np.int64)
    completion = np.where(generating, np.minimum(np.clip(rng.lognormal(np.log(110), 0.8, rows), 1, None), max_tokens), 0)
    completion = completion.astype(np.int64)
    ms_per_token = rng.lognormal(np.log(25), 0.3, rows)
    latency = np.where(
        generating,
        40 + prompt * 0.3 + completion * ms_per_token,
        np.where(moderating, rng.lognormal(np.log(35), 0.5, rows), rng.lognormal(np.log(6), 0.5, rows)),
    ).astype(np.int64)

    # How it ended. Heavier accounts meet their limits more often; three short incidents overload the engine.
    roll = rng.random(rows)
    limited_share = np.where(account_of_row < 3, 0.04, 0.008)
    incident_hours = rng.choice(hours, size=3, replace=False)
    overloaded_share = np.where(np.isin(hour_of_row, incident_hours), 0.25, 0.002)
    status = np.full(rows, 200, dtype=np.int64)
    error_code = np.full(rows, "", dtype=object)
    finish = np.where(generating, np.where(completion >= max_tokens, "length", "stop"), "").astype(object)
    refused = np.zeros(rows, dtype=bool)

    def outcome(mask, code, error, *, refuse=True):
        nonlocal refused
        mask = mask & ~refused
        status[mask], error_code[mask] = code, error
        if refuse:
            refused |= mask
        return mask

    quota = rng.random(rows) < 0.2
    outcome(roll < limited_share, 429, "rate_limit_exceeded")
    refused_quota = refused & quota
    error_code[refused_quota] = "insufficient_quota"
    outcome((roll >= 0.05) & (roll < 0.065), 400, "invalid_request_error")
    outcome((roll >= 0.065) & (roll < 0.067), 403, "permission_denied")
    input_blocked = outcome(generating & (roll >= 0.07) & (roll < 0.073), 400, CONTENT_FILTER)
    outcome(generating & (rng.random(rows) < overloaded_share), 503, "engine_overloaded")
    failed = outcome(generating & (roll >= 0.08) & (roll < 0.0802), 500, "engine_error", refuse=False)
    disconnected = outcome(generating & (roll >= 0.081) & (roll < 0.086), 499, "client_disconnected", refuse=False)
    output_blocked = generating & ~refused & ~failed & ~disconnected & (roll >= 0.09) & (roll < 0.0915)
    finish[output_blocked] = CONTENT_FILTER
    partial = output_blocked | disconnected | failed
    completion = np.where(partial, (completion * rng.random(rows)).astype(np.int64), completion)
    finish[disconnected] = "cancelled"
    finish[failed] = "error"
    prompt[refused], completion[refused], latency[refused], finish[refused] = 0, 0, 0, ""

    models = np.where(generating, model_id, np.where(moderating, MODERATION_MODEL, "")).astype(object)
    models[input_blocked] = ""  # refused before admission: the row is written without a model
    reserved = np.where(generating & ~refused, prompt + max_tokens, np.where(moderating & ~refused, prompt, 0))

    # Moderation events: every block, plus flags and redactions of served generations.
    served = generating & ~refused
    flagged = served & ~output_blocked & (rng.random(rows) < 0.008)
    redacted = served & ~output_blocked & ~flagged & (rng.random(rows) < 0.002)
    event_rows = np.flatnonzero(input_blocked | output_blocked | flagged | redacted)
    categories = _category_lists(len(event_rows), rng)
    flag_direction = rng.random(rows) < 0.5
    review_roll = rng.random(rows)
    score_roll = rng.random(rows)

    totals = {"usage": 0, "events": 0}
    endpoint_of_row_list = endpoint_of_row.tolist()

    def write(lo: int, hi: int) -> None:
        records = [
            UsageRecord(
                request_id=f"{REQUEST_ID_PREFIX}{tag}-{i:08d}",
                account_id=int(account_ids[i]),
                api_key_id=int(key_of_row[i]),
                endpoint=endpoint_names[endpoint_of_row_list[i]],
                model=models[i],
                prompt_tokens=int(prompt[i]),
                completion_tokens=int(completion[i]),
                reserved_tokens=int(reserved[i]),
                state=UsageRecord.SETTLED,
                status_code=int(status[i]),
                finish_reason=finish[i],
                error_code=error_code[i],
                latency_ms=int(latency[i]),
                created_at=(moment := start + timedelta(microseconds=int(offsets_us[i]))),
                settled_at=moment + timedelta(milliseconds=int(latency[i])),
            )
            for i in range(lo, hi)
        ]
        with transaction.atomic():
            UsageRecord.objects.bulk_create(records)
        totals["usage"] += len(records)

    for lo in range(0, rows, batch_size):
        write(lo, min(rows, lo + batch_size))
        if progress:
            progress(totals["usage"], rows)

    events = []
    for row, names in zip(event_rows.tolist(), categories):
        action = BLOCK if (input_blocked[row] or output_blocked[row]) else FLAG if flagged[row] else REDACT
        direction = INPUT if input_blocked[row] else OUTPUT if output_blocked[row] else (INPUT if flag_direction[row] else OUTPUT)
        review = review_roll[row]
        events.append(ModerationEvent(
            request_id=f"{REQUEST_ID_PREFIX}{tag}-{row:08d}",
            account_id=int(account_ids[row]),
            api_key_id=int(key_of_row[row]),
            endpoint=endpoint_names[endpoint_of_row_list[row]],
            direction=direction,
            action=action,
            categories=names,
            scores={name: round(0.5 + 0.49 * float(score_roll[row]), 4) for name in names},
            text="(synthetic event: no text was stored)",
            created_at=start + timedelta(microseconds=int(offsets_us[row])),
            review_status=(ModerationEvent.PENDING if review < 0.6 else
                           ModerationEvent.CONFIRMED if review < 0.9 else ModerationEvent.FALSE_POSITIVE),
        ))
    for lo in range(0, len(events), batch_size):
        with transaction.atomic():
            ModerationEvent.objects.bulk_create(events[lo:lo + batch_size])
    totals["events"] = len(events)

    return LoadResult(
        usage_rows=totals["usage"],
        moderation_events=totals["events"],
        accounts=len(owners),
        keys=sum(len(keys) for _, keys in owners),
        start=start,
        end=end,
    )


def synthetic_history_clear() -> tuple[int, int]:
    """Delete every synthetic usage row and moderation event (accounts and keys stay). Returns the counts."""
    events, _ = ModerationEvent.objects.filter(request_id__startswith=REQUEST_ID_PREFIX).delete()
    usage, _ = UsageRecord.objects.filter(request_id__startswith=REQUEST_ID_PREFIX).delete()
    return usage, events
