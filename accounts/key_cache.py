"""An in-process cache of authenticated keys, so a busy worker does not read the database on every request.

Entries live at most ``SLUICE_KEY_CACHE_S`` seconds (0 turns the cache off). That bound is the promise: a key
revoked or suspended anywhere (another worker, another host, the admin, a command) stops working on every
worker within it. Revoking through ``accounts.services`` also forgets the key in this process at once.

What is cached is the key row with its account; the secret is still compared on every request, and expiry
is still judged against the clock on every request, so neither waits for the cache.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from django.conf import settings

from accounts import clock
from accounts.models import ApiKey

MAX_ENTRIES = 10_000

_entries: dict[str, tuple[ApiKey, datetime]] = {}
_lock = threading.Lock()


def key_cache_get(lookup_id: str) -> ApiKey | None:
    ttl = settings.SLUICE_KEY_CACHE_S
    if ttl <= 0:
        return None
    with _lock:
        entry = _entries.get(lookup_id)
    if entry is None:
        return None
    key, fetched_at = entry
    if clock.now() - fetched_at >= timedelta(seconds=ttl):
        key_cache_forget(lookup_id)
        return None
    return key


def key_cache_put(key: ApiKey) -> None:
    if settings.SLUICE_KEY_CACHE_S <= 0:
        return
    with _lock:
        if len(_entries) >= MAX_ENTRIES:
            _entries.clear()  # rare (that many distinct keys within seconds); refetching is cheap
        _entries[key.lookup_id] = (key, clock.now())


def key_cache_forget(lookup_id: str) -> None:
    with _lock:
        _entries.pop(lookup_id, None)


def key_cache_clear() -> None:
    with _lock:
        _entries.clear()
