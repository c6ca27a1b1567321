"""Token quotas: reserved before generation, settled after, never below zero, under concurrency too."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections

from accounts.models import ApiKey, QuotaCounter, UsageRecord
from accounts.services import key_create, request_admit, request_settle, stale_reservations_settle
from tests.conftest import MODEL, disconnect_client

CHAT = "/v1/chat/completions"


def chat(max_tokens=10, **extra):
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": max_tokens, **extra}


def counters():
    return {(c.scope.split(":")[0], c.period): c for c in QuotaCounter.objects.all()}


def test_a_request_reserves_then_settles_to_what_was_used(api, account, fake_engine, clock):
    account.daily_token_quota = 10_000
    account.save()
    fake_engine.replies.append("four")
    body = api.post(CHAT, chat(max_tokens=100)).json()
    counter = counters()[("account", "day")]
    assert counter.used == body["usage"]["total_tokens"] and counter.reserved == 0
    assert counter.granted - counter.used - counter.reserved == counter.remaining
    row = UsageRecord.objects.get()
    assert row.prompt_tokens + row.completion_tokens == counter.used


def test_a_spent_quota_is_a_429_insufficient_quota_that_says_not_to_retry(api, account, fake_engine, clock):
    account.daily_token_quota = 50
    account.save()
    response = api.post(CHAT, chat(max_tokens=40))
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "insufficient_quota" and error["type"] == "insufficient_quota"
    assert response["x-should-retry"] == "false"
    assert fake_engine.submitted == []
    assert all((c.used, c.reserved) == (0, 0) for c in QuotaCounter.objects.all())
    assert UsageRecord.objects.get().status_code == 429


def test_key_and_account_quotas_both_apply_and_a_refusal_reserves_nothing(api, account, fake_engine, clock):
    account.monthly_token_quota = 100_000
    account.save()
    ApiKey.objects.update(daily_token_quota=60)
    assert api.post(CHAT, chat(max_tokens=70)).status_code == 429
    assert all(c.reserved == 0 and c.used == 0 for c in QuotaCounter.objects.all())


def test_quotas_reset_at_the_utc_day_and_month_boundaries(api, account, fake_engine, clock):
    account.daily_token_quota = 60
    account.monthly_token_quota = 100
    account.save()
    fake_engine.replies.extend(["x" * 10] * 4)
    assert api.post(CHAT, chat(max_tokens=10)).status_code == 200  # 2026-03-31 23:58:30 UTC
    used = counters()[("account", "day")].used
    assert api.post(CHAT, chat(max_tokens=60 - used)).status_code == 429
    clock.advance(minutes=2)  # 2026-04-01: a new day and a new month
    assert api.post(CHAT, chat(max_tokens=10)).status_code == 200
    assert QuotaCounter.objects.filter(period="day").count() == 2
    assert QuotaCounter.objects.filter(period="month").count() == 2


def test_a_stream_cut_by_the_client_is_charged_what_was_generated(api, account, fake_engine, clock):
    account.daily_token_quota = 10_000
    account.save()
    fake_engine.replies.append("Calm words about the sea and the sky. " * 10)
    response = api.post(CHAT, chat(max_tokens=300, stream=True))
    for raw in response.streaming_content:
        if b'"content":"C' in raw:
            break
    disconnect_client(response)
    generated = fake_engine.handles[0].completion_tokens
    row = UsageRecord.objects.get()
    counter = counters()[("account", "day")]
    assert 0 < row.completion_tokens == generated < 300
    assert (counter.used, counter.reserved) == (row.prompt_tokens + generated, 0)


def test_the_sweep_settles_reservations_left_by_a_killed_worker(account, api_key, clock):
    account.daily_token_quota = 1000
    account.save()
    key = ApiKey.objects.get()
    request_admit(key=key, request_id="req_dead", endpoint="chat.completions", model=MODEL, prompt_tokens=20,
                  max_tokens=200)
    assert counters()[("account", "day")].reserved == 220
    assert stale_reservations_settle(older_than=timedelta(minutes=15)) == 0  # too recent: maybe still running
    clock.advance(minutes=16)
    assert stale_reservations_settle(older_than=timedelta(minutes=15)) == 1
    assert stale_reservations_settle(older_than=timedelta(minutes=15)) == 0  # safe to run again
    counter = counters()[("account", "day")]
    assert (counter.used, counter.reserved) == (20, 0)
    assert UsageRecord.objects.get().finish_reason == "abandoned"


def test_settling_twice_charges_once(account, api_key, clock):
    account.daily_token_quota = 1000
    account.save()
    admission = request_admit(key=ApiKey.objects.get(), request_id="r1", endpoint="completions", model=MODEL,
                              prompt_tokens=5, max_tokens=50)
    for _ in range(2):
        request_settle(admission=admission, prompt_tokens=5, completion_tokens=7, status_code=200)
    counter = counters()[("account", "day")]
    assert (counter.used, counter.reserved) == (12, 0)


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_requests_admit_exactly_as_many_as_the_quota_fits():
    if connection.vendor != "postgresql":
        pytest.skip("concurrency on the quota is tested on PostgreSQL (set DATABASE_URL=postgres://...)")
    from accounts.services import account_get_or_create

    per_request = 30  # prompt 10 + max_tokens 20
    fits = 17
    account = account_get_or_create(name="race")
    account.daily_token_quota = per_request * fits + per_request - 1  # 17 fit, an 18th does not
    account.tokens_per_minute = 10**9
    account.requests_per_minute = 10**6
    account.save()
    key = key_create(account=account).key
    reserve_together = threading.Barrier(50)
    settle_together = threading.Barrier(50)
    outcomes = []

    def attempt(index):
        try:
            reserve_together.wait()
            try:
                admission = request_admit(key=ApiKey.objects.select_related("account").get(pk=key.pk),
                                          request_id=f"req_{index}", endpoint="completions", model=MODEL,
                                          prompt_tokens=10, max_tokens=20)
            except Exception as error:
                admission = None
                outcomes.append(("refused", getattr(error, "code", type(error).__name__)))
            # Nobody settles (refunds) before everyone has tried: the quota must decide alone.
            settle_together.wait()
            if admission is not None:
                completion = index % 7  # each admitted request uses part of its reservation
                request_settle(admission=admission, prompt_tokens=10, completion_tokens=completion, status_code=200)
                outcomes.append(("admitted", 10 + completion))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    admitted = [used for outcome, used in outcomes if outcome == "admitted"]
    refused = [code for outcome, code in outcomes if outcome == "refused"]
    assert len(admitted) == fits and len(refused) == 50 - fits
    assert set(refused) == {"insufficient_quota"}
    counter = QuotaCounter.objects.get(scope=f"account:{account.pk}", period="day")
    assert counter.reserved == 0
    assert counter.used == sum(admitted) <= counter.granted
    assert counter.used + counter.reserved + counter.remaining == counter.granted
    charged = sum(r.prompt_tokens + r.completion_tokens for r in UsageRecord.objects.filter(account=account))
    assert charged == counter.used
