"""Faults against a real server (gunicorn, 2 workers) on throwaway Redis and PostgreSQL servers of its own:
Redis frozen and stopped under load, PostgreSQL stopped and started again, a worker SIGKILLed mid-stream."""

from __future__ import annotations

import json
import os
import signal
import statistics
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODEL
from tests.servers import Server, manage, server_env
from tests.throwaway import ThrowawayPostgres, ThrowawayRedis

pytestmark = [pytest.mark.server, pytest.mark.faults]

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def postgres():
    cluster = ThrowawayPostgres().init().start()
    yield cluster
    cluster.remove()


@pytest.fixture
def database(postgres):
    name = f"faults_{uuid.uuid4().hex[:8]}"
    return name, postgres.create_database(name)


def chat(max_tokens=5, **extra):
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": max_tokens, **extra}


def start_server(tmp_path: Path, *, database_url: str, cache_url: str, **settings: str) -> tuple[Server, str]:
    env = server_env(DATABASE_URL=database_url, CACHE_URL=cache_url, SLUICE_ENGINE="fake",
                     SLUICE_RESERVATION_SWEEP_S="1", SLUICE_RESERVATION_STALE_S="3", **settings)
    manage(env, "migrate", "--noinput")
    key = manage(env, "create_api_key", "--account", "faults").strip().splitlines()[-1]
    server = Server(env, workers=2, log_path=tmp_path / "server.log").start()
    return server, key


def start_twin(tmp_path: Path, twin: Server, *, cache_url: str) -> Server:
    """A second server on the first one's database (same keys), with its own cache."""
    return Server({**twin.env, "CACHE_URL": cache_url}, workers=2, log_path=tmp_path / "twin.log").start()


def worker_pids(server: Server) -> set[int]:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    return {int(pid) for pid in children}


def headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def run_load(urls: list[str], key: str, seconds: float, *, threads: int = 4) -> dict[str, list[tuple[float, float, int]]]:
    """(start, latency, status) per server of the requests that ``threads`` clients sent back to back for
    ``seconds``, each client taking the servers in turn, so that every server sees the same machine load."""
    results: dict[str, list[tuple[float, float, int]]] = {url: [] for url in urls}
    end = time.monotonic() + seconds

    def client():
        with httpx.Client(headers=headers(key), timeout=30) as http:
            while time.monotonic() < end:
                for url in urls:
                    started = time.monotonic()
                    status = http.post(url + CHAT, json=chat()).status_code
                    results[url].append((started, time.monotonic() - started, status))

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results


def p95(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=20)[-1]


def log_lines(server: Server, text: str) -> list[str]:
    return [line for line in server.log_path.read_text().splitlines() if text in line]


def latencies(results, since: float = 0.0) -> list[float]:
    return [latency for started, latency, _ in results if started >= since]


def test_a_frozen_or_stopped_redis_costs_bounded_latency_and_one_warning_per_outage(tmp_path, database):
    """The server whose Redis fails is measured beside a twin whose Redis stays healthy, request for request,
    so the comparison holds on a busy machine."""
    redis, healthy_redis = ThrowawayRedis().start(), ThrowawayRedis().start()
    server, key = start_server(tmp_path, database_url=database[1], cache_url=redis.url,
                               SLUICE_CACHE_BREAKER_OPEN_S="5")
    twin = None
    try:
        twin = start_twin(tmp_path, server, cache_url=healthy_redis.url)
        with server_pg(database) as db:  # no key's limit may refuse this load
            db.execute("UPDATE accounts_account SET requests_per_minute = 1000000, tokens_per_minute = 100000000")
        urls = [server.url, twin.url]
        run_load(urls, key, 2)  # warm all four workers up
        assert httpx.post(server.url + CHAT, json=chat(), headers=headers(key)).headers["x-ratelimit-limit-requests"]

        redis.freeze()  # SIGSTOP: connections hang until the socket timeout, not refused
        frozen_at = time.monotonic()
        frozen = run_load(urls, key, 5)
        redis.thaw()
        assert all(status == 200 for _, _, status in frozen[server.url])  # limits fail open
        once_open = latencies(frozen[server.url], since=frozen_at + 1.0)
        beside = latencies(frozen[twin.url], since=frozen_at + 1.0)
        assert len(once_open) >= 20

        run_load([server.url], key, 7)  # past the open time: each worker's probe finds Redis again
        assert 1 <= len(log_lines(server, "INFO accounts.cache_breaker")) <= 2
        assert "x-ratelimit-limit-requests" in httpx.post(server.url + CHAT, json=chat(), headers=headers(key)).headers

        redis.stop()  # down: connections refused
        stopped = run_load(urls, key, 4)
        assert all(status == 200 for _, _, status in stopped[server.url])

        print(f"p95 frozen once open {p95(once_open) * 1000:.1f} ms beside healthy {p95(beside) * 1000:.1f} ms "
              f"({len(once_open)} requests each); stopped {p95(latencies(stopped[server.url])) * 1000:.1f} ms beside "
              f"{p95(latencies(stopped[twin.url])) * 1000:.1f} ms ({len(stopped[server.url])})")
        assert p95(once_open) <= p95(beside) + 0.050
        assert p95(latencies(stopped[server.url])) <= p95(latencies(stopped[twin.url])) + 0.050

        warnings = log_lines(server, "WARNING")
        # Two outages, two workers: at most one warning per worker per outage, however many requests.
        assert 2 <= len(warnings) <= 4, warnings
        assert all("accounts.cache_breaker" in line for line in warnings), warnings
        assert len(frozen[server.url]) + len(stopped[server.url]) > 20 * len(warnings)
    finally:
        server.stop()
        if twin:
            twin.stop()
        redis.remove()
        healthy_redis.remove()


class server_pg:
    """A connection to the test's database on the throwaway cluster (autocommit)."""

    def __init__(self, database):
        self.name, self.url = database

    def __enter__(self):
        import psycopg

        self.connection = psycopg.connect(self.url, autocommit=True)
        return self.connection

    def __exit__(self, *exc):
        self.connection.close()


def ledger(database) -> dict:
    with server_pg(database) as db:
        rows = db.execute("SELECT state, status_code, prompt_tokens, completion_tokens, finish_reason "
                          "FROM accounts_usagerecord").fetchall()
        counters = db.execute("SELECT used, reserved FROM accounts_quotacounter").fetchall()
    return {"rows": rows, "counters": counters}


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout} s")


def test_postgresql_down_is_a_503_with_retry_after_serves_nothing_and_recovers_without_a_restart(
    tmp_path, postgres, database
):
    server, key = start_server(tmp_path, database_url=database[1], cache_url="locmem://",
                               SLUICE_FAKE_TOKEN_DELAY_S="0.02")
    try:
        with server_pg(database) as db:
            db.execute("UPDATE accounts_account SET daily_token_quota = 1000000")
        served = [httpx.post(server.url + CHAT, json=chat(), headers=headers(key), timeout=30) for _ in range(4)]
        assert [r.status_code for r in served] == [200] * 4
        pids = worker_pids(server)

        http = httpx.Client(base_url=server.url, headers=headers(key), timeout=30)
        cut = http.send(http.build_request("POST", CHAT, json=chat(max_tokens=400, stream=True, ignore_eos=True)),
                        stream=True)
        assert cut.status_code == 200
        chunks = cut.iter_lines()
        assert next(line for line in chunks if line.startswith("data: "))

        postgres.stop()
        try:
            attempts = [
                httpx.post(server.url + CHAT, json=chat(), headers=headers(key), timeout=30),
                httpx.post(server.url + CHAT, json=chat(stream=True), headers=headers(key), timeout=30),
                httpx.post(server.url + "/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 3},
                           headers=headers(key), timeout=30),
                httpx.get(server.url + "/v1/usage", headers=headers(key), timeout=30),
                # Outside DRF: the admin's session middleware reads the database before any view runs.
                httpx.get(server.url + "/admin/", cookies={"sessionid": "x" * 32}, timeout=30),
            ]
            for response in attempts:
                assert response.status_code == 503, (response.request.url, response.text[:300])
                assert response.headers["content-type"].startswith("application/json")
                assert response.headers["Retry-After"].isdigit()
                error = response.json()["error"]
                assert (error["code"], error["type"]) == ("database_unavailable", "server_error")
                assert set(error) == {"message", "type", "param", "code"}
            try:  # the stream that was running when the database went away ends (cut, or finished)
                for _ in chunks:
                    pass
            except httpx.HTTPError:
                pass
        finally:
            postgres.start()

        def served_again():
            response = httpx.post(server.url + CHAT, json=chat(), headers=headers(key), timeout=30)
            return response.status_code == 200 and response
        wait_for(served_again, 30, "no 200 after PostgreSQL came back")
        assert worker_pids(server) == pids  # the same workers: no restart

        # The cut stream's reservation is settled by the server's own sweep, not held for 900 s.
        wait_for(lambda: all(row[0] == "settled" for row in ledger(database)["rows"]), 20,
                 "a reservation still pending")
        book = ledger(database)
        ok = [row for row in book["rows"] if row[1] == 200]
        assert len(ok) == 5  # every 200 the client saw has its row, and only those: nothing unmetered
        assert len(book["rows"]) == 6  # ... plus the stream that was cut
        charged = sum(row[2] + row[3] for row in book["rows"])
        assert [(used, reserved) for used, reserved in book["counters"]] == [(charged, 0)]
    finally:
        server.stop()


def test_a_worker_killed_mid_stream_has_its_reservation_released_by_the_server_while_a_live_one_keeps_its_own(
    tmp_path, database
):
    server, key = start_server(tmp_path, database_url=database[1], cache_url="locmem://",
                               SLUICE_FAKE_TOKEN_DELAY_S="0.02")
    http = httpx.Client(base_url=server.url, headers=headers(key), timeout=60)
    streams = []
    try:
        with server_pg(database) as db:
            db.execute("UPDATE accounts_account SET daily_token_quota = 1000000")

        def open_stream():
            response = http.send(
                http.build_request("POST", CHAT, json=chat(max_tokens=500, stream=True, ignore_eos=True)), stream=True
            )
            assert response.status_code == 200
            lines = response.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))
            with server_pg(database) as db:
                owner = db.execute("SELECT owner FROM accounts_usagerecord WHERE request_id = %s",
                                   (response.headers["x-request-id"],)).fetchone()[0]
            streams.append((response, lines))
            return response, lines, int(owner.split(":")[1])

        doomed, _, doomed_pid = open_stream()
        for _ in range(12):  # until a stream lands on the other worker
            live, live_lines, live_pid = open_stream()
            if live_pid != doomed_pid:
                break
        else:
            pytest.fail("every stream went to one worker")
        killed_at = time.monotonic()
        os.kill(doomed_pid, signal.SIGKILL)

        def doomed_row():
            with server_pg(database) as db:
                return db.execute("SELECT state, finish_reason, error_code FROM accounts_usagerecord "
                                  "WHERE request_id = %s", (doomed.headers["x-request-id"],)).fetchone()
        assert wait_for(lambda: doomed_row()[0] == "settled" and doomed_row(), 60,
                        "the killed worker's reservation was not released") == ("settled", "abandoned", "worker_lost")
        released_after = time.monotonic() - killed_at

        # The stream on the live worker ran through many sweeps, past the staleness; it still ends as served.
        events = [line[len("data: "):] for line in live_lines if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        finish = [json.loads(e)["choices"][0]["finish_reason"] for e in events[:-1] if json.loads(e)["choices"]]
        assert finish[-1] == "length"
        with server_pg(database) as db:
            row = db.execute("SELECT state, status_code, completion_tokens, finish_reason FROM accounts_usagerecord "
                             "WHERE request_id = %s", (live.headers["x-request-id"],)).fetchone()
        assert row == ("settled", 200, 500, "length")
        assert time.monotonic() - killed_at > 3 + 2  # it outlived the staleness (3 s) and a sweep after it
        assert released_after < 60
    finally:
        for response, _ in streams:
            response.close()
        http.close()
        server.stop()
