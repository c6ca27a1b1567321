"""Accounts' services: keys and usage. Other apps call these, never the models directly."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import Q

from accounts import clock, limits, reservations
from accounts.key_cache import key_cache_forget, key_cache_get, key_cache_put
from accounts.keys import hashes_match, key_generate, key_parse
from accounts.models import ALL_SCOPES, Account, ApiKey, UsageRecord
from accounts.quotas import QuotaExceeded, quota_reserve, quota_settle
from platform.errors import ApiError

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
    key = key_cache_get(parsed.lookup_id)
    if key is None:
        key = ApiKey.objects.select_related("account").filter(lookup_id=parsed.lookup_id).first()
        if key is not None:
            key_cache_put(key)  # unknown ids are not cached: a key created elsewhere works at once
    if key is None or not hashes_match(key.secret_hash, parsed.hashed):
        raise KeyRefused("Incorrect API key provided.")
    now = clock.now()
    reason = key.refusal_reason(now)
    if reason:
        raise KeyRefused(reason)
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        # Throttled so that a busy key costs one write a minute, not one per request.
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def usage_settle(
    *,
    record: UsageRecord,
    prompt_tokens: int,
    completion_tokens: int,
    status_code: int,
    finish_reason: str = "",
    error_code: str = "",
    only_if: Q | None = None,
) -> bool:
    """Close a usage row with what was really used and settle its quota reservation, in one transaction.

    Settling twice changes nothing (the row's state guards it); returns whether this call settled it.
    ``only_if`` adds a condition to that one UPDATE (the sweep's: the owner's heartbeat is still stale).
    """
    now = clock.now()
    # Capped to the column (a row swept weeks after it opened would overflow it on PostgreSQL).
    latency_ms = min(2**31 - 1, max(0, int((now - record.created_at).total_seconds() * 1000)))
    charged = min(record.reserved_tokens, prompt_tokens + completion_tokens) if record.reserved_tokens else 0
    with transaction.atomic():
        rows = UsageRecord.objects.filter(pk=record.pk, state=UsageRecord.PENDING)
        updated = (rows.filter(only_if) if only_if is not None else rows).update(
            state=UsageRecord.SETTLED,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            status_code=status_code,
            finish_reason=finish_reason,
            error_code=error_code,
            latency_ms=latency_ms,
            settled_at=now,
        )
        if updated:
            quota_settle(counter_ids=record.quota_counter_ids, reserved=record.reserved_tokens, used=charged)
    if updated:
        record.state = UsageRecord.SETTLED
        record.prompt_tokens, record.completion_tokens = prompt_tokens, completion_tokens
    return bool(updated)


def usage_record_refused(*, key: ApiKey, request_id: str, endpoint: str, status_code: int, error_code: str) -> None:
    """The row of a keyed request that was not admitted (bad input, limits): charged nothing.

    Idempotent by request id: a request that was admitted and then failed keeps its settled row."""
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


@dataclass(eq=False)  # compared and tracked by identity (accounts/reservations.py)
class Admission:
    """An admitted request: its open usage row, its tokens-per-minute reservation, the headers to send."""

    record: UsageRecord
    headers: dict[str, str]
    tokens_window: int | None = None


def _rate_limited(message: str, state: limits.LimitState, headers: dict[str, str]) -> ApiError:
    return ApiError(
        message,
        status_code=429,
        type="tokens",
        code="rate_limit_exceeded",
        headers={**headers, "Retry-After": limits.retry_after(state)},
    )


def request_admit(
    *,
    key: ApiKey,
    request_id: str,
    endpoint: str,
    model: str,
    prompt_tokens: int,
    max_tokens: int,
) -> Admission:
    """Admit a request before any model work, or refuse it with a 429 that changes nothing.

    Reserves prompt + max tokens against the key's tokens-per-minute (cache) and every token quota that
    applies (database), and opens the request's usage row in the same transaction as the quota reservation.
    """
    reserve = prompt_tokens + max_tokens
    headers: dict[str, str] = {}
    tokens_state, window = limits.tokens_reserve(key=key, tokens=reserve)
    headers.update(limits.limit_headers(requests=None, tokens=tokens_state))
    if tokens_state is not None and tokens_state.exceeded:
        raise _rate_limited(
            f"Rate limit reached for tokens per minute: limit {tokens_state.limit}, this request needs up to "
            f"{reserve}. Retry after the window resets or lower max_tokens.",
            tokens_state,
            headers,
        )
    now = clock.now()
    try:
        with transaction.atomic():
            counter_ids = quota_reserve(key=key, tokens=reserve, moment=now)
            record = UsageRecord.objects.create(
                request_id=request_id,
                account_id=key.account_id,
                api_key=key,
                endpoint=endpoint,
                model=model,
                prompt_tokens=prompt_tokens,
                reserved_tokens=reserve,
                quota_counter_ids=counter_ids,
                created_at=now,
                owner=reservations.owner_id(),
                heartbeat_at=now,
            )
    except QuotaExceeded as exceeded:
        limits.tokens_release(key=key, window=window, tokens=reserve)
        raise ApiError(
            str(exceeded),
            status_code=429,
            type="insufficient_quota",
            code="insufficient_quota",
            headers={**headers, "x-should-retry": "false"},
        ) from None
    admission = Admission(record=record, headers=headers, tokens_window=window)
    reservations.reservation_track(admission)
    return admission


def request_settle(
    *,
    admission: Admission,
    prompt_tokens: int,
    completion_tokens: int,
    status_code: int,
    finish_reason: str = "",
    error_code: str = "",
) -> None:
    """Charge what was really used and give back the rest of the reservation (quotas and tokens/minute)."""
    record = admission.record
    try:
        settled = usage_settle(
            record=record,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            status_code=status_code,
            finish_reason=finish_reason,
            error_code=error_code,
        )
    finally:
        # Settled, or not writable (the database is down): either way no longer ours to keep alive, so an
        # unwritten settlement is left to the sweep once its heartbeat is stale.
        reservations.reservation_done(admission)
    if settled:
        unused = record.reserved_tokens - min(record.reserved_tokens, prompt_tokens + completion_tokens)
        limits.tokens_release(key=record.api_key, window=admission.tokens_window, tokens=unused)


KEY_LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "daily_token_quota", "monthly_token_quota")


def key_limits_check(*, account: Account, limits_requested: dict) -> None:
    """A key may lower its account's limits, never raise them. Raises ValueError naming the field."""
    for field_name, value in limits_requested.items():
        if value is None:
            continue
        ceiling = getattr(account, field_name)
        if ceiling is not None and value > ceiling:
            raise ValueError(f"{field_name}: {value} is above the account's limit of {ceiling}.")


def key_revoke(*, key: ApiKey) -> ApiKey:
    """Revoke a key, irreversibly. Revoking a revoked key changes nothing."""
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=clock.now())
    key_cache_forget(key.lookup_id)  # at once here; other workers within SLUICE_KEY_CACHE_S
    key.refresh_from_db()
    return key


# What a key hands on to a key it creates when the request does not say, and what it may not exceed.
KEY_GRANTED_FIELDS = ("scopes", "allowed_models", "allowed_endpoints", *KEY_LIMIT_FIELDS, "expires_at")


def _grant_refused(field_name: str, message: str) -> ApiError:
    return ApiError(message, status_code=403, type="permission_error", code="permission_denied", param=field_name)


def key_granted_settings(key: ApiKey) -> dict:
    """A key's own grantable settings: what a key it creates inherits unless the request lowers them."""
    return {field_name: getattr(key, field_name) for field_name in KEY_GRANTED_FIELDS}


def key_grant_check(*, grantor: ApiKey, requested: dict) -> None:
    """A key may give (create, change, rotate) only what it holds itself: scopes among its own, models and
    endpoints among its own when it has a list (never every one), limits at most its own when it has its own,
    and an expiry no later than its own. Raises a 403 naming the first setting that is stronger."""
    for field_name, value in requested.items():
        own = getattr(grantor, field_name)
        if field_name == "scopes":
            extra = sorted(set(value) - set(own))
            if extra:
                raise _grant_refused(field_name, f"This key cannot grant the scope '{extra[0]}', which it lacks.")
        elif field_name in ("allowed_models", "allowed_endpoints"):
            if own and (not value or set(value) - set(own)):
                raise _grant_refused(field_name, f"This key is limited to {field_name} {sorted(own)} and cannot "
                                                 "grant others (an empty list would allow every one).")
        elif field_name in KEY_LIMIT_FIELDS:
            if own is not None and (value is None or value > own):
                raise _grant_refused(field_name, f"This key's own {field_name} is {own}; it cannot grant more.")
        elif field_name == "expires_at":
            if own is not None and (value is None or value > own):
                raise _grant_refused(field_name, f"This key expires at {own.isoformat()}; it cannot grant a key "
                                                 "that outlives it.")


def _state_conflict(code: str, message: str) -> ApiError:
    """The key's state forbids the change (expired, suspended, already rotated): a 409, ``code`` says which."""
    return ApiError(message, status_code=409, code=code)


def key_expiry_change_check(*, key: ApiKey) -> None:
    """An expired key stays expired, and a rotated key keeps the end of its grace: create or rotate instead."""
    if key.expires_at is not None and key.expires_at <= clock.now():
        raise _state_conflict("key_expired", "This key has expired; its expiry cannot be changed. Create a new key.")
    if key.replaced_by_id is not None:
        raise _state_conflict("key_already_rotated", "This key was rotated; it expires at the end of its grace "
                                                     "period. Use the key that replaced it.")


def key_rotate(*, key: ApiKey, grace_seconds: int) -> CreatedKey:
    """A new key with the same settings; the old one keeps working for ``grace_seconds``, then expires.

    A key is rotated once: an expired or suspended key cannot be (its successor would be an already-expired
    key, or a way around the suspension), and a second rotation of the same key is refused, so one old key
    never has two live successors. Raises a 409."""
    if key.expires_at is not None and key.expires_at <= clock.now():
        raise _state_conflict("key_expired", "This key has expired and cannot be rotated. Create a new key.")
    if key.suspended_at is not None:
        raise _state_conflict("key_suspended", "This key is suspended and cannot be rotated.")
    with transaction.atomic():
        created = key_create(
            account=key.account,
            name=key.name,
            scopes=list(key.scopes),
            expires_at=key.expires_at,
            allowed_models=list(key.allowed_models),
        )
        new = created.key
        new.allowed_endpoints = list(key.allowed_endpoints)
        for field_name in KEY_LIMIT_FIELDS:
            setattr(new, field_name, getattr(key, field_name))
        new.save()
        if not ApiKey.objects.filter(pk=key.pk, replaced_by__isnull=True).update(replaced_by=new):
            # A concurrent rotation won; raising leaves the transaction, which drops the key made here.
            successor = ApiKey.objects.filter(pk=key.pk).values_list("replaced_by__lookup_id", flat=True).first()
            raise _state_conflict("key_already_rotated", f"This key was already rotated (to key {successor}); "
                                                         "rotate that key instead.")
        grace_end = clock.now() + timedelta(seconds=grace_seconds)
        if key.expires_at is None or key.expires_at > grace_end:
            ApiKey.objects.filter(pk=key.pk).update(expires_at=grace_end)
    key_cache_forget(key.lookup_id)
    return created


def stale_reservations_settle(*, older_than: timedelta) -> int:
    """Settle usage rows left pending by a killed worker: charge the prompt, refund the rest.

    What the dead worker generated is unknown, so the customer gets the benefit of the doubt. Safe to run
    at any time and concurrently: each row is settled once, by a conditional UPDATE. A row whose owner
    heartbeated within ``older_than`` is a request still running, however old, and is left alone.
    """
    cutoff = clock.now() - older_than
    stale = Q(created_at__lt=cutoff) & (Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=cutoff))
    return _abandoned_settle(UsageRecord.objects.filter(state=UsageRecord.PENDING), why=stale)


def reservations_sweep(*, stale_after: timedelta, legacy_older_than: timedelta) -> int:
    """Settle the pending reservations nobody holds any more, as ``stale_reservations_settle`` does.

    Those whose owner's heartbeat is older than ``stale_after``, whose owner is a process of this host that is
    gone, or (rows from before heartbeats) that are older than ``legacy_older_than``. Each is settled by one
    conditional UPDATE that re-checks why, so a heartbeat refreshed meanwhile keeps its reservation, and any
    number of workers on any number of hosts may sweep at once.
    """
    now = clock.now()
    pending = UsageRecord.objects.filter(state=UsageRecord.PENDING)
    stale = Q(heartbeat_at__lt=now - stale_after) | Q(heartbeat_at__isnull=True, created_at__lt=now - legacy_older_than)
    host_prefix = reservations.owner_id().rsplit(":", 2)[0] + ":"
    owners_here = set(pending.filter(owner__startswith=host_prefix).values_list("owner", flat=True).distinct())
    gone = [owner for owner in owners_here if reservations.owner_gone(owner)]
    reason = stale | Q(owner__in=gone) if gone else stale
    return _abandoned_settle(pending, why=reason)


def _abandoned_settle(pending, *, why: Q) -> int:
    """Settle each pending row that ``why`` selects as abandoned, charging its prompt only; the UPDATE re-checks
    ``why``, so a row its owner touched meanwhile is left alone. Returns how many were settled."""
    settled = 0
    for record in pending.filter(why):
        settled += usage_settle(
            record=record,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=0,
            status_code=500,
            finish_reason="abandoned",
            error_code="worker_lost",
            only_if=why,
        )
    return settled


def key_suspend(*, key: ApiKey) -> None:
    """Suspend a key (reversible by an admin). Suspending a suspended key changes nothing."""
    ApiKey.objects.filter(pk=key.pk, suspended_at__isnull=True).update(suspended_at=clock.now())
    key_cache_forget(key.lookup_id)


@dataclass(frozen=True)
class AccountShare:
    """An account's part in fair sharing of a model (inference/fair_queue.py): its own fields, else the defaults."""

    weight: int
    max_running: int | None  # None: up to the batch size
    max_queued: int


def account_share(*, account: Account) -> AccountShare:
    from django.conf import settings

    def own(value, default):
        return default if value is None else value

    max_running = own(account.max_concurrent_sequences, settings.SLUICE_FAIR_MAX_RUNNING) or None
    return AccountShare(weight=own(account.share_weight, settings.SLUICE_FAIR_DEFAULT_WEIGHT), max_running=max_running,
                        max_queued=own(account.max_queued_requests, settings.SLUICE_FAIR_MAX_QUEUED))
