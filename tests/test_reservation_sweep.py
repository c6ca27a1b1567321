"""Reservations left by dead workers or unwritten settlements are swept; a live request's never is."""

import gc
import subprocess
from datetime import timedelta

import pytest
from django.db import OperationalError

from accounts import reservations, services
from accounts.models import ApiKey, QuotaCounter, UsageRecord
from accounts.services import request_admit, request_settle
from accounts.sweeper import sweep_once
from tests.conftest import MODEL


@pytest.fixture
def quota_key(account, api_key, settings):
    settings.SLUICE_RESERVATION_SWEEP_S = 10
    settings.SLUICE_RESERVATION_STALE_S = 30
    account.daily_token_quota = 1000
    account.save()
    return ApiKey.objects.get()


def admit(key, request_id="req_1"):
    return request_admit(key=key, request_id=request_id, endpoint="chat.completions", model=MODEL,
                         prompt_tokens=20, max_tokens=200)


def reserved_and_used():
    counter = QuotaCounter.objects.get(scope__startswith="account:")
    return counter.reserved, counter.used


def test_a_reservation_is_stamped_with_its_owner_process_and_a_heartbeat(quota_key, clock):
    admission = admit(quota_key)
    row = UsageRecord.objects.get()
    assert row.owner == reservations.owner_id() and row.owner.split(":")[1].isdigit()
    assert row.heartbeat_at == clock.now()
    assert admission.record.pk == row.pk


def test_a_long_request_on_a_live_worker_keeps_its_reservation_however_long_it_runs(quota_key, clock):
    admission = admit(quota_key)  # held: the request is still running in this process
    for _ in range(60):  # ten minutes of sweeps, far past the staleness
        clock.advance(seconds=10)
        assert sweep_once() == 0
    assert UsageRecord.objects.get().state == UsageRecord.PENDING
    assert reserved_and_used() == (220, 0)
    request_settle(admission=admission, prompt_tokens=20, completion_tokens=150, status_code=200)
    assert reserved_and_used() == (0, 170)  # settled by its own request, to what it used


def test_a_reservation_whose_owner_stopped_heartbeating_is_settled_once_stale(quota_key, clock):
    admit(quota_key)
    UsageRecord.objects.update(owner="another-host:4242:1")  # its worker, on another host, died
    reservations._in_flight.clear()
    clock.advance(seconds=29)
    assert sweep_once() == 0  # not yet stale: it might still be beating
    clock.advance(seconds=2)
    assert sweep_once() == 1
    assert sweep_once() == 0  # settled once, however often or on however many workers it runs
    row = UsageRecord.objects.get()
    assert (row.state, row.finish_reason, row.error_code) == (UsageRecord.SETTLED, "abandoned", "worker_lost")
    assert reserved_and_used() == (0, 20)  # the prompt charged, the rest refunded


def test_a_reservation_whose_owner_process_on_this_host_is_gone_is_settled_without_waiting(quota_key, clock):
    admit(quota_key)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stat = reservations._process_stat(dead.pid)
    assert stat is None
    host = reservations.owner_id().rsplit(":", 2)[0]
    UsageRecord.objects.update(owner=f"{host}:{dead.pid}:12345")
    reservations._in_flight.clear()
    assert sweep_once() == 1  # the heartbeat is fresh, but its process is gone
    assert reserved_and_used() == (0, 20)


def test_a_refreshed_heartbeat_wins_over_a_sweep_that_read_the_row_before(quota_key, clock):
    admit(quota_key)
    record = UsageRecord.objects.get()
    clock.advance(seconds=31)
    UsageRecord.objects.update(heartbeat_at=clock.now())  # the owner beat just after the sweep read the row
    stale = services.Q(heartbeat_at__lt=clock.now() - timedelta(seconds=30))
    assert not services.usage_settle(record=record, prompt_tokens=20, completion_tokens=0, status_code=500,
                                     only_if=stale)
    assert UsageRecord.objects.get().state == UsageRecord.PENDING


def test_a_settlement_the_database_refused_is_swept_once_stale_instead_of_holding_quota(quota_key, clock, monkeypatch):
    admission = admit(quota_key)

    def database_down(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    with monkeypatch.context() as patch, pytest.raises(OperationalError):
        patch.setattr(services, "usage_settle", database_down)
        request_settle(admission=admission, prompt_tokens=20, completion_tokens=50, status_code=200)
    assert reserved_and_used() == (220, 0)
    clock.advance(seconds=31)
    assert sweep_once() == 1  # no longer heartbeated by its worker: settled within the staleness, not 900 s
    assert reserved_and_used() == (0, 20)


def test_a_request_dropped_without_settling_is_no_longer_kept_alive(quota_key, clock):
    admit(quota_key)  # nothing refers to the admission any more (a stream never read, an unexpected error)
    gc.collect()
    clock.advance(seconds=31)
    assert sweep_once() == 1


def test_the_cron_command_leaves_alone_a_request_older_than_its_cutoff_that_still_heartbeats(quota_key, clock):
    admission = admit(quota_key)
    for _ in range(100):  # 1000 s of a live request, past the command's 900 s
        clock.advance(seconds=10)
        sweep_once()
    assert services.stale_reservations_settle(older_than=timedelta(seconds=900)) == 0
    assert UsageRecord.objects.get().state == UsageRecord.PENDING
    del admission
    gc.collect()
    clock.advance(seconds=901)
    assert services.stale_reservations_settle(older_than=timedelta(seconds=900)) == 1
