"""Per-key rate limits on the shared cache: requests per minute and tokens per minute.

Requests are counted with django-ratelimit's core (``get_usage``: an atomic ``cache.add`` then
``cache.incr`` in a fixed one-minute window keyed by the API key's lookup id). Tokens per minute use the
same window arithmetic: a request adds prompt tokens + max_tokens when admitted and gives back what it did
not use when it ends.

When the cache (Redis) is unreachable, limits fail open: the request is served without rate limiting. Token
quotas live in the database and still hold, so an outage can cost smoothness, never money; refusing every
request because a cache is down would turn a Redis blip into a full outage. Every cache call goes through one
circuit breaker (accounts/cache_breaker.py), so a sick cache costs one timeout and one warning per outage,
not three timeouts and two warnings per request.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

from django.core.cache import cache
from django_ratelimit import core as ratelimit

from accounts import clock
from accounts.cache_breaker import rate_limit_cache
from accounts.models import ApiKey

WINDOW_SECONDS = 60
REQUESTS_GROUP = "sluice.requests"


@dataclass(frozen=True)
class LimitState:
    limit: int
    remaining: int
    reset_seconds: int
    exceeded: bool = False


def _window(key: ApiKey) -> tuple[int, int]:
    """(window end, seconds left): django-ratelimit's per-key staggered one-minute windows, on our clock."""
    now = int(clock.now().timestamp())
    end = now - now % WINDOW_SECONDS + zlib.crc32(key.lookup_id.encode()) % WINDOW_SECONDS
    if end < now:
        end += WINDOW_SECONDS
    return end, end - now


def requests_count(*, key: ApiKey, request) -> LimitState | None:
    """Count this request against the key's requests-per-minute. None when the cache is down."""
    rate = f"{key.effective_requests_per_minute()}/m"
    usage = rate_limit_cache.call(
        lambda: ratelimit.get_usage(
            request, group=REQUESTS_GROUP, key=lambda group, req: key.lookup_id, rate=rate, increment=True
        ),
        fallback=None,
    )
    if usage is None:
        return None
    limit = usage["limit"]
    return LimitState(
        limit=limit,
        remaining=max(0, limit - usage["count"]),
        reset_seconds=max(1, int(usage["time_left"])),
        exceeded=usage["should_limit"],
    )


def _tokens_key(key: ApiKey, window_start: int) -> str:
    return f"sluice:tpm:{key.lookup_id}:{window_start}"


def tokens_reserve(*, key: ApiKey, tokens: int) -> tuple[LimitState | None, int | None]:
    """Add ``tokens`` to this minute's count unless that would pass the limit.

    Returns (state, window) — window identifies the reservation for ``tokens_release`` — or (None, None)
    when the cache is down.
    """
    limit = key.effective_tokens_per_minute()
    window, reset = _window(key)
    reset = max(1, reset)
    cache_key = _tokens_key(key, window)

    def reserve() -> int:
        cache.add(cache_key, 0, WINDOW_SECONDS + 5)
        total = cache.incr(cache_key, tokens)
        if total > limit:
            cache.decr(cache_key, tokens)
        return total

    total = rate_limit_cache.call(reserve, fallback=None)
    if total is None:
        return None, None
    if total > limit:
        return LimitState(limit, max(0, limit - (total - tokens)), reset, exceeded=True), None
    return LimitState(limit, max(0, limit - total), reset), window


def tokens_peek(*, key: ApiKey) -> LimitState | None:
    """This minute's token budget without changing it (for responses that reserve nothing)."""
    limit = key.effective_tokens_per_minute()
    window, reset = _window(key)
    used = rate_limit_cache.call(lambda: cache.get(_tokens_key(key, window), 0), fallback=None)
    if used is None:
        return None
    return LimitState(limit, max(0, limit - used), max(1, reset))


def tokens_release(*, key: ApiKey, window: int | None, tokens: int) -> None:
    """Give back reserved tokens that were not used, if their minute is still running."""
    if window is None or tokens <= 0:
        return
    current, _ = _window(key)
    if current != window:
        return
    rate_limit_cache.call(lambda: cache.decr(_tokens_key(key, window), tokens), fallback=None)


def limit_headers(*, requests: LimitState | None, tokens: LimitState | None) -> dict[str, str]:
    headers = {}
    for name, state in (("requests", requests), ("tokens", tokens)):
        if state is not None:
            headers[f"x-ratelimit-limit-{name}"] = str(state.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(state.remaining)
            headers[f"x-ratelimit-reset-{name}"] = f"{state.reset_seconds}s"
    return headers


def retry_after(state: LimitState) -> str:
    return str(max(1, math.ceil(state.reset_seconds)))
