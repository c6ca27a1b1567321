"""Who holds each pending quota reservation, and the heartbeat that says its holder is alive.

A request's usage row opens pending with its quota reservation (``accounts.services.request_admit``),
stamped with its owner — host, pid and the process's start time, so a reused pid is another owner — and a
heartbeat. While the request runs, its worker refreshes the heartbeat of every reservation it still holds
(``reservations_heartbeat``, from the sweeper thread, ``accounts/sweeper.py``). A reservation whose heartbeat
has gone stale, or whose owner is a process of this host that is gone, was left behind: a SIGKILLed worker,
or a request that could not write its settlement because the database was down. The sweep
(``accounts.services.reservations_sweep``) settles those; it never touches one whose owner still beats.

In-flight admissions are held weakly: a request that ends without settling (its stream was never read, an
unexpected error) drops out when nothing refers to it any more, so its reservation is swept, not kept alive.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
import weakref
from pathlib import Path

from accounts import clock
from accounts.models import UsageRecord

_in_flight: weakref.WeakSet = weakref.WeakSet()
_lock = threading.Lock()
_owner: tuple[int, str] | None = None  # (pid, owner id), recomputed after a fork


def _process_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process, from /proc; None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name, in parentheses, may hold spaces
    return fields[0], fields[19]


def owner_id() -> str:
    """``host:pid:nonce`` of this process; the nonce is its start time where /proc tells it."""
    global _owner
    pid = os.getpid()
    if _owner is None or _owner[0] != pid:
        stat = _process_stat(pid)
        nonce = stat[1] if stat else uuid.uuid4().hex[:12]
        _owner = (pid, f"{socket.gethostname()}:{pid}:{nonce}")
    return _owner[1]


def owner_gone(owner: str) -> bool:
    """Whether ``owner`` is a process of this host that no longer runs (exited, a zombie, or its pid reused).

    Owners on other hosts are judged by their heartbeat alone."""
    try:
        host, pid, nonce = owner.rsplit(":", 2)
        pid_number = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname() or _process_stat(os.getpid()) is None:
        return False  # another host, or no /proc here to tell
    stat = _process_stat(pid_number)
    return stat is None or stat[0] == "Z" or stat[1] != nonce


def reservation_track(admission) -> None:
    with _lock:
        _in_flight.add(admission)


def reservation_done(admission) -> None:
    with _lock:
        _in_flight.discard(admission)


def reservations_heartbeat() -> int:
    """Refresh the heartbeat of this process's pending reservations; one UPDATE. Returns how many."""
    with _lock:
        ids = [admission.record.pk for admission in _in_flight if admission.record.state == UsageRecord.PENDING]
    if not ids:
        return 0
    return UsageRecord.objects.filter(pk__in=ids, state=UsageRecord.PENDING).update(heartbeat_at=clock.now())
