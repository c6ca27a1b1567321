"""Accounts' services: keys and usage. Other apps call these, never the models directly."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import F

from accounts import clock
from accounts.keys import hashes_match, key_generate, key_parse
from accounts.models import ALL_SCOPES, Account, ApiKey, UsageRecord

LAST_USED_RESOLUTION = timedelta(seconds=60)


class KeyRefused(Exception):
    """The presented key may not be used; the message says why (never echoes the key)."""


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    plaintext: str  # shown once, never stored


def account_get_or_create(*, name: str) -> Account:
    account, _ = Account.objects.get_or_create(name=name)
    return account


def key_create(
    *,
    account: Account,
    name: str = "",
    scopes: list[str] | None = None,
    expires_at=None,
    allowed_models: list[str] | None = None,
) -> CreatedKey:
    scopes = list(ALL_SCOPES) if scopes is None else scopes
    unknown = set(scopes) - set(ALL_SCOPES)
    if unknown:
        raise ValueError(f"Unknown scopes: {sorted(unknown)}")
    plaintext, lookup_id, hashed = key_generate()
    key = ApiKey.objects.create(
        account=account,
        name=name,
        lookup_id=lookup_id,
        secret_hash=hashed,
        last_four=plaintext[-4:],
        scopes=scopes,
        allowed_models=allowed_models or [],
        expires_at=expires_at,
        created_at=clock.now(),
    )
    return CreatedKey(key=key, plaintext=plaintext)


def key_authenticate(*, plaintext: str) -> ApiKey:
    """The usable key for a presented plaintext, or KeyRefused with a message a client can act on."""
    parsed = key_parse(plaintext)
    if parsed is None:
        raise KeyRefused("Incorrect API key provided: the key is malformed.")
    key = ApiKey.objects.select_related("account").filter(lookup_id=parsed.lookup_id).first()
    if key is None or not hashes_match(key.secret_hash, parsed.hashed):
        raise KeyRefused("Incorrect API key provided.")
    now = clock.now()
    reason = key.refusal_reason(now)
    if reason:
        raise KeyRefused(reason)
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        # Throttled so that a busy key costs one write a minute, not one per request.
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key


def usage_begin(
    *, key: ApiKey, request_id: str, endpoint: str, model: str, prompt_tokens: int, reserve_tokens: int
) -> UsageRecord:
    """Open the usage row of an admitted request, before any model work."""
    return UsageRecord.objects.create(
        request_id=request_id,
        account_id=key.account_id,
        api_key=key,
        endpoint=endpoint,
        model=model,
        prompt_tokens=prompt_tokens,
        reserved_tokens=reserve_tokens,
        created_at=clock.now(),
    )


def usage_settle(
    *,
    record: UsageRecord,
    prompt_tokens: int,
    completion_tokens: int,
    status_code: int,
    finish_reason: str = "",
    error_code: str = "",
) -> None:
    """Close a usage row with what was really used. Settling twice changes nothing."""
    now = clock.now()
    latency_ms = max(0, int((now - record.created_at).total_seconds() * 1000))
    with transaction.atomic():
        updated = UsageRecord.objects.filter(pk=record.pk, state=UsageRecord.PENDING).update(
            state=UsageRecord.SETTLED,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            reserved_tokens=0,
            status_code=status_code,
            finish_reason=finish_reason,
            error_code=error_code,
            latency_ms=latency_ms,
            settled_at=now,
        )
    if updated:
        record.state = UsageRecord.SETTLED
        record.prompt_tokens, record.completion_tokens = prompt_tokens, completion_tokens


def usage_record_refused(*, key: ApiKey, request_id: str, endpoint: str, status_code: int, error_code: str) -> None:
    """The row of a keyed request refused before admission (bad input, limits): charged nothing."""
    now = clock.now()
    UsageRecord.objects.get_or_create(
        request_id=request_id,
        defaults=dict(
            account_id=key.account_id,
            api_key=key,
            endpoint=endpoint,
            state=UsageRecord.SETTLED,
            status_code=status_code,
            error_code=error_code,
            created_at=now,
            settled_at=now,
            latency_ms=0,
        ),
    )


class AccessRefused(Exception):
    """The key is valid but may not use this model or endpoint."""


def key_check_access(*, key: ApiKey, model: str, endpoint: str) -> None:
    if key.allowed_models and model not in key.allowed_models:
        raise AccessRefused(f"This API key may not use the model '{model}'.")
    if key.allowed_endpoints and endpoint not in key.allowed_endpoints:
        raise AccessRefused(f"This API key may not use the '{endpoint}' endpoint.")


@dataclass
class Admission:
    """An admitted request: its open usage row and the rate-limit headers to send back."""

    record: UsageRecord
    headers: dict[str, str]


def request_admit(
    *, key: ApiKey, request_id: str, endpoint: str, model: str, prompt_tokens: int, max_tokens: int
) -> Admission:
    """Admit a request before any model work: open its usage row, reserving prompt + max tokens."""
    record = usage_begin(
        key=key,
        request_id=request_id,
        endpoint=endpoint,
        model=model,
        prompt_tokens=prompt_tokens,
        reserve_tokens=prompt_tokens + max_tokens,
    )
    return Admission(record=record, headers={})


def request_settle(
    *,
    admission: Admission,
    prompt_tokens: int,
    completion_tokens: int,
    status_code: int,
    finish_reason: str = "",
    error_code: str = "",
) -> None:
    """Charge what was really used and release the rest of the reservation."""
    usage_settle(
        record=admission.record,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        status_code=status_code,
        finish_reason=finish_reason,
        error_code=error_code,
    )
