"""The background thread each server worker runs: heartbeat its own reservations, sweep abandoned ones.

Every ``SLUICE_RESERVATION_SWEEP_S`` seconds: one UPDATE refreshes the heartbeat of this worker's in-flight
reservations, then ``reservations_sweep`` settles the ones whose owner died or stopped beating (see
accounts/reservations.py). gunicorn starts it in each worker (gunicorn.conf.py); the
``settle_stale_reservations`` command remains for anything else (cron).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connection

from accounts.reservations import reservations_heartbeat
from accounts.services import reservations_sweep

logger = logging.getLogger(__name__)

_thread: threading.Thread | None = None


def sweep_once() -> int:
    """One heartbeat and one sweep; returns how many reservations were settled."""
    reservations_heartbeat()
    return reservations_sweep(
        stale_after=timedelta(seconds=settings.SLUICE_RESERVATION_STALE_S),
        legacy_older_than=timedelta(seconds=settings.SLUICE_STALE_RESERVATION_S),
    )


def _run(stop: threading.Event) -> None:
    failing = False
    while not stop.wait(settings.SLUICE_RESERVATION_SWEEP_S):
        try:
            settled = sweep_once()
            if settled:
                logger.info("Settled %s abandoned reservation(s)", settled)
            if failing:
                logger.info("Reservation sweep running again")
            failing = False
        except Exception as error:  # the database is down: try again next time, warn once per outage
            if not failing:
                logger.warning("Reservation sweep failed (%s: %s); retrying every %.0f s", type(error).__name__,
                               error, settings.SLUICE_RESERVATION_SWEEP_S)
            failing = True
        finally:
            close_old_connections()
            if failing:
                connection.close()  # a broken connection is not reused next time


def sweeper_start() -> None:
    """Start this process's sweeper thread once (no-op when SLUICE_RESERVATION_SWEEP_S is 0)."""
    global _thread
    if settings.SLUICE_RESERVATION_SWEEP_S <= 0 or (_thread is not None and _thread.is_alive()):
        return
    _thread = threading.Thread(target=_run, args=(threading.Event(),), name="sluice-reservation-sweeper",
                               daemon=True)
    _thread.start()
