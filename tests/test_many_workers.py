"""The production shape: two gunicorn servers (two "hosts") of two workers each, on PostgreSQL and Redis.

Nothing may depend on one process's memory: a key's requests per minute and its account's token quota hold
across all four workers, and a key revoked in the database stops working on every worker within
SLUICE_KEY_CACHE_S (each worker keeps authenticated keys that long, to spare a query per request).

The servers get a database of their own (created here, migrated, dropped afterwards) on the PostgreSQL
server that DATABASE_URL names, and a Redis database of their own.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.servers import Server, fresh_postgres_and_redis, manage, server_env

pytestmark = pytest.mark.server

REDIS_URL = "redis://127.0.0.1:6379/5"
KEY_CACHE_S = 2
MODEL = "SmolLM2-135M-Instruct"

SETUP = """
from accounts.models import Account
from accounts.services import account_get_or_create, key_create
from moderation.models import ModerationPolicy

# The fake engine and no moderation models: these servers test shared state, not generation.
ModerationPolicy.objects.create(name="off", check_input=False, check_output=False)
rpm = account_get_or_create(name="rpm")
Account.objects.filter(pk=rpm.pk).update(requests_per_minute=6)
quota = account_get_or_create(name="quota")
Account.objects.filter(pk=quota.pk).update(daily_token_quota=QUOTA, tokens_per_minute=10**9, requests_per_minute=10**6)
revoked = account_get_or_create(name="revoked")
# Polled as fast as the servers answer (about a hundred requests): no rate limit may answer before revocation.
Account.objects.filter(pk=revoked.pk).update(requests_per_minute=10**6)
for account, count in ((rpm, 3), (quota, 1), (revoked, 1)):
    for _ in range(count):
        print(account.name, key_create(account=account).plaintext)
"""
PER_REQUEST_MAX_TOKENS = 20
QUOTA = 400


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with fresh_postgres_and_redis("sluice_workers", REDIS_URL) as database_url:
        yield from _cluster(tmp_path_factory, database_url)


def _cluster(tmp_path_factory, database_url):
    folder = tmp_path_factory.mktemp("workers")
    env = server_env(
        DATABASE_URL=database_url, CACHE_URL=REDIS_URL, SLUICE_ENGINE="fake", SLUICE_KEY_CACHE_S=str(KEY_CACHE_S),
    )
    servers = [Server(env, workers=2, log_path=folder / f"host{i}.log") for i in range(2)]
    try:
        manage(env, "migrate", "--noinput")
        keys: dict[str, list[str]] = {}
        for line in manage(env, "shell", "-c", SETUP.replace("QUOTA", str(QUOTA))).splitlines():
            account, _, key = line.partition(" ")
            keys.setdefault(account, []).append(key)
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda server: server.start(), servers))
        yield servers, keys, database_url
    finally:
        for server in servers:
            server.stop()


def post(server: Server, key: str, *, max_tokens: int = 2) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
    # A fresh connection each time, so either worker of the server may take it.
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=120)


def test_a_keys_requests_per_minute_hold_across_every_worker_of_every_host(cluster):
    servers, keys, _ = cluster
    # Windows are staggered per key: take the key whose current minute has the most time left for the burst.
    firsts = {key: post(servers[0], key) for key in keys["rpm"]}
    key = max(firsts, key=lambda k: int(firsts[k].headers["x-ratelimit-reset-requests"].rstrip("s")))
    statuses = [firsts[key].status_code] + [post(servers[index % 2], key).status_code for index in range(1, 10)]
    assert statuses == [200] * 6 + [429] * 4


def test_an_accounts_token_quota_holds_under_concurrent_requests_on_every_worker(cluster):
    import psycopg

    servers, keys, database_url = cluster
    key = keys["quota"][0]
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda i: post(servers[i % 2], key, max_tokens=PER_REQUEST_MAX_TOKENS), range(36)))
    codes = [r.status_code if r.status_code == 200 else r.json()["error"]["code"] for r in responses]
    assert set(codes) <= {200, "insufficient_quota"} and "insufficient_quota" in codes
    with psycopg.connect(database_url) as connection:
        granted, used, reserved = connection.execute(
            "SELECT granted, used, reserved FROM accounts_quotacounter q JOIN accounts_account a"
            " ON a.id = q.account_id WHERE a.name = 'quota' AND q.period = 'day' AND q.api_key_id IS NULL"
        ).fetchone()
        charged = connection.execute(
            "SELECT SUM(prompt_tokens + completion_tokens) FROM accounts_usagerecord u JOIN accounts_account a"
            " ON a.id = u.account_id WHERE a.name = 'quota'"
        ).fetchone()[0]
    assert (granted, reserved) == (QUOTA, 0)
    assert used == charged <= QUOTA
    # Every admitted request uses its whole reservation (the fake reply is longer than max_tokens), so no
    # refund makes room for more: exactly as many are served as fit, on whichever worker they landed.
    per_request = next(r.json()["usage"]["total_tokens"] for r in responses if r.status_code == 200)
    assert codes.count(200) == QUOTA // per_request and used == codes.count(200) * per_request


def test_a_key_revoked_in_the_database_stops_working_on_every_worker_within_the_cache_bound(cluster):
    import psycopg

    servers, keys, database_url = cluster
    key = keys["revoked"][0]
    for index in range(8):  # every worker has (most likely) seen and cached the key
        assert post(servers[index % 2], key, max_tokens=1).status_code == 200
    lookup_id = key[len("sk-sluice-"):len("sk-sluice-") + 12]
    with psycopg.connect(database_url, autocommit=True) as connection:  # as another host or the admin would
        connection.execute("UPDATE accounts_apikey SET revoked_at = now() WHERE lookup_id = %s", (lookup_id,))
    revoked_at = time.monotonic()
    outcomes: list[tuple[float, int, int]] = []  # (sent at, server, status)
    refused_in_a_row = [0, 0]
    deadline = revoked_at + KEY_CACHE_S + 10  # bounded polling
    index = 0
    while min(refused_in_a_row) < 6 and time.monotonic() < deadline:
        server = index % 2
        sent = time.monotonic() - revoked_at
        status = post(servers[server], key, max_tokens=1).status_code
        outcomes.append((sent, server, status))
        refused_in_a_row[server] = refused_in_a_row[server] + 1 if status == 401 else 0
        index += 1
    propagated = max(sent for sent, _, status in outcomes if status == 200) if any(
        status == 200 for _, _, status in outcomes) else 0.0
    print(f"revocation: last request served {propagated:.2f} s after it; {len(outcomes)} requests polled")
    assert min(refused_in_a_row) >= 6, f"still served after {KEY_CACHE_S + 10} s: {outcomes[-12:]}"
    assert {status for _, _, status in outcomes} <= {200, 401}
    # Served at most SLUICE_KEY_CACHE_S after the revocation (plus a request's own latency), never later.
    assert propagated <= KEY_CACHE_S + 0.5, outcomes
