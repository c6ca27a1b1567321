"""Two server processes sharing Redis hold a key to its requests-per-minute together."""

import httpx
import pytest
import redis

from tests.servers import Server, manage, server_env

pytestmark = pytest.mark.server

REDIS_URL = "redis://127.0.0.1:6379/3"


@pytest.fixture
def shared_redis():
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379 (CI starts one)")
    client.flushdb()
    yield
    client.flushdb()


def test_two_processes_share_one_requests_per_minute_limit_and_other_keys_are_unaffected(tmp_path, shared_redis):
    env = server_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", CACHE_URL=REDIS_URL, SLUICE_ENGINE="fake"
    )
    manage(env, "migrate", "--noinput")
    # Windows are staggered per key; keep a spare or two in case one's minute ends mid-burst.
    candidates = [manage(env, "create_api_key", "--account", "shared").strip().splitlines()[-1] for _ in range(6)]
    other = manage(env, "create_api_key", "--account", "shared", "--name", "other").strip().splitlines()[-1]
    manage(env, "shell", "-c", "from accounts.models import Account; Account.objects.update(requests_per_minute=5)")
    servers = [Server(env, log_path=tmp_path / f"server{i}.log").start() for i in range(2)]
    try:
        body = {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

        def post(server, key):
            return httpx.post(f"{server.url}/v1/chat/completions", json=body,
                              headers={"Authorization": f"Bearer {key}"}, timeout=180)

        for server in servers:  # warm up: the first request of a worker loads its moderation components
            assert post(server, other).status_code == 200
        for limited in candidates:
            first = post(servers[0], limited)
            if int(first.headers["x-ratelimit-reset-requests"].rstrip("s")) >= 30:
                break  # the burst below fits in this key's current minute
        statuses = [first.status_code]
        for index in range(1, 8):
            statuses.append(post(servers[index % 2], limited).status_code)
        assert statuses == [200] * 5 + [429] * 3
        for server in servers:
            assert post(server, other).status_code == 200  # another key of the same account: unaffected
    finally:
        for server in servers:
            server.stop()
