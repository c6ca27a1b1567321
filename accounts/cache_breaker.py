"""A circuit breaker around the shared cache (Redis) on the request path.

Without it every request paid for a sick cache on its own: a frozen Redis (SIGSTOP, a stuck host) costs a
full socket timeout per cache call, three calls per request, and a stopped one logged a warning per call.
With it, the first failure opens the breaker for ``SLUICE_CACHE_BREAKER_OPEN_S`` seconds: callers then skip
the cache at once (rate limits fail open, see accounts/limits.py; quotas live in the database and still
hold). When that time is up one caller probes the cache (half-open) while the others keep skipping it; a
success closes the breaker, a failure opens it again. One WARNING when it opens, one INFO when it closes:
an outage is two log lines per process, not two per request.

State is per process (each gunicorn worker has its own), guarded by a lock for the request threads.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, TypeVar

from django.conf import settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

_CLOSED = "closed"
_PROBE = "probe"


class CacheBreaker:
    def __init__(self, *, name: str, clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.clock = clock
        self._lock = threading.Lock()
        self._open_until: float | None = None  # None: closed
        self._opened_at = 0.0
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    def call(self, operation: Callable[[], T], *, fallback: T) -> T:
        """``operation()``, or ``fallback`` when the breaker is open or the operation fails."""
        ticket = self._admit()
        if ticket is None:
            return fallback
        try:
            result = operation()
        except ValueError:  # a counter that expired between two calls: an answer, not an outage
            self._succeeded(ticket)
            return fallback
        except Exception as error:  # any failure of the cache: its client raises several kinds
            self._failed(ticket, error)
            return fallback
        self._succeeded(ticket)
        return result

    def reset(self) -> None:
        with self._lock:
            self._open_until, self._probing = None, False

    def _admit(self) -> str | None:
        with self._lock:
            if self._open_until is None:
                return _CLOSED
            if self._probing or self.clock() < self._open_until:
                return None
            self._probing = True
            return _PROBE

    def _failed(self, ticket: str, error: Exception) -> None:
        with self._lock:
            opening = self._open_until is None
            if opening:
                self._opened_at = self.clock()
            if opening or ticket == _PROBE:
                self._open_until = self.clock() + settings.SLUICE_CACHE_BREAKER_OPEN_S
                self._probing = False
        if opening:
            logger.warning(
                "%s unavailable (%s: %s); skipping it for %.1f s at a time until it answers again "
                "(rate limits fail open; quotas still hold)",
                self.name, type(error).__name__, error, settings.SLUICE_CACHE_BREAKER_OPEN_S,
            )

    def _succeeded(self, ticket: str) -> None:
        if ticket != _PROBE:
            return  # a call let through before the breaker opened says nothing about now
        with self._lock:
            self._open_until, self._probing = None, False
            down_for = self.clock() - self._opened_at
        logger.info("%s reachable again after %.1f s; rate limits apply again", self.name, down_for)


rate_limit_cache = CacheBreaker(name="Rate-limit cache")
