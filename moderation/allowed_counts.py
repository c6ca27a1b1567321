"""Allowed moderation decisions, counted per day and direction (only flags, redactions and blocks are logged).

Writing each allowed decision with its own UPDATE would send every request to the same hot row. Instead a
process adds its counts up in memory and writes them at most every ``SLUICE_MODERATION_COUNT_FLUSH_S``
seconds (0: at once), and when it exits. A count that cannot be written waits for the next flush; counting
never fails a request.
"""

from __future__ import annotations

import atexit
import collections
import logging
import threading
import time
from datetime import date

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F

from accounts import clock
from moderation.models import AllowedCount

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_pending: collections.Counter[tuple[date, str]] = collections.Counter()
_monotonic = time.monotonic  # tests move it
_last_flush = _monotonic()


def count_allowed(direction: str) -> None:
    """Count one allowed decision on ``direction`` ("input" or "output") today."""
    with _lock:
        _pending[(clock.now().date(), direction)] += 1
        interval = settings.SLUICE_MODERATION_COUNT_FLUSH_S
        due = interval <= 0 or _monotonic() - _last_flush >= interval
    if due:
        flush()


def flush() -> None:
    """Write the counts gathered so far."""
    global _pending, _last_flush
    with _lock:
        taken, _pending = _pending, collections.Counter()
        _last_flush = _monotonic()
    for (day, direction), count in taken.items():
        try:
            _add(day, direction, count)
        except Exception:
            logger.warning("Could not write %s allowed moderation counts; keeping them for the next flush", count,
                           exc_info=True)
            with _lock:
                _pending[(day, direction)] += count


def discard() -> None:
    """Forget unwritten counts (tests: counts must not leak from one test's database into the next)."""
    with _lock:
        _pending.clear()


def _add(day: date, direction: str, count: int) -> None:
    if AllowedCount.objects.filter(day=day, direction=direction).update(count=F("count") + count):
        return
    try:
        with transaction.atomic():
            AllowedCount.objects.create(day=day, direction=direction, count=count)
    except IntegrityError:  # another process created the day's row first
        AllowedCount.objects.filter(day=day, direction=direction).update(count=F("count") + count)


atexit.register(lambda: flush() if _pending else None)
