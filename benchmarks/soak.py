"""A soak: a real server (gunicorn, 2 workers, fake engine) on PostgreSQL + Redis under steady mixed load for
minutes, then a reconciliation of the ledger against what the client saw.

Clients send chat completions back to back, alternating streamed (``stream_options.include_usage``) and
whole responses. Printed: requests/s, latency p50/p95 per kind, errors, RSS of the workers at the start and
the end, PostgreSQL connections of the soak's database (start, peak, end), and the reconciliation:

- usage rows = requests served (200) = the client's count of served requests, and no other row;
- quota used (the account's daily counter) = Σ charged tokens of the usage rows = Σ the `usage` the client read;
- no reservation left pending, nothing left reserved on the counter.

It uses its own PostgreSQL database (dropped and created at the start) and its own Redis db number (flushed
at the start; never FLUSHALL). Exit status 1 when the reconciliation does not hold.

Run from the project root:
    .venv/bin/python benchmarks/soak.py [--seconds 180] [--clients 12] \
        [--database-url postgres://postgres@127.0.0.1:5432/sluice_soak] [--cache-url redis://127.0.0.1:6379/15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402
import psycopg  # noqa: E402
import redis  # noqa: E402

from tests.servers import Server, manage, server_env  # noqa: E402

MODEL = "SmolLM2-135M-Instruct"
CHAT = "/v1/chat/completions"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker_pids(server: Server) -> list[int]:
    pid = server.process.pid
    return sorted(int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Client(threading.Thread):
    """Sends requests back to back until ``end``, alternating streamed and whole ones."""

    def __init__(self, url: str, key: str, end: float, index: int):
        super().__init__(daemon=True)
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        self.end, self.index = end, index
        self.latencies: dict[str, list[float]] = {"stream": [], "whole": []}
        self.served = self.tokens = self.sent = 0
        self.errors: dict[str, int] = {}

    def _body(self, n: int, stream: bool) -> dict:
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"Client {self.index} request {n}"}],
                "max_tokens": 8 + n % 24}
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        return body

    def _whole(self, n: int) -> int:
        response = self.http.post(CHAT, json=self._body(n, False))
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")
        return response.json()["usage"]["total_tokens"]

    def _stream(self, n: int) -> int:
        with self.http.stream("POST", CHAT, json=self._body(n, True)) as response:
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}")
            tokens, done = None, False
            for line in response.iter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    usage = json.loads(line[6:]).get("usage")
                    if usage:
                        tokens = usage["total_tokens"]
            if not done or tokens is None:
                raise RuntimeError("stream ended without usage or [DONE]")
            return tokens

    def run(self):
        n = 0
        while time.monotonic() < self.end:
            stream = (n + self.index) % 2 == 0
            started = time.monotonic()
            self.sent += 1
            try:
                tokens = self._stream(n) if stream else self._whole(n)
            except Exception as error:  # counted and reported, never hidden
                name = str(error) if isinstance(error, RuntimeError) else type(error).__name__
                self.errors[name] = self.errors.get(name, 0) + 1
            else:
                self.latencies["stream" if stream else "whole"].append(time.monotonic() - started)
                self.served += 1
                self.tokens += tokens
            n += 1
        self.http.close()


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 1 else float("nan")


def fresh_database(url: str) -> None:
    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def connections(url: str) -> int:
    name = urlparse(url).path.lstrip("/")
    admin = urlparse(url)._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as connection:
        # Less this sampler's own connection, which is to another database.
        return connection.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()[0]


def reconcile(url: str, served: int, client_tokens: int) -> list[tuple[str, bool, str]]:
    with psycopg.connect(url, autocommit=True) as db:
        deadline = time.monotonic() + 15  # the last streams settle as they close
        while db.execute("SELECT count(*) FROM accounts_usagerecord WHERE state = 'pending'").fetchone()[0]:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        rows, ok_rows, pending, charged = db.execute(
            "SELECT count(*), count(*) FILTER (WHERE status_code = 200), count(*) FILTER (WHERE state = 'pending'), "
            "coalesce(sum(prompt_tokens + completion_tokens), 0) FROM accounts_usagerecord"
        ).fetchone()
        used, reserved = db.execute(
            "SELECT coalesce(sum(used), 0), coalesce(sum(reserved), 0) FROM accounts_quotacounter"
        ).fetchone()
    return [
        ("usage rows = requests served = client's count", rows == ok_rows == served,
         f"{rows} rows, {ok_rows} with 200, client served {served}"),
        ("quota used = Σ charged tokens = Σ client usage", used == charged == client_tokens,
         f"used {used}, charged {charged}, client {client_tokens}"),
        ("no reservation left open", pending == 0 and reserved == 0, f"{pending} pending rows, {reserved} reserved"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/sluice_soak")
    parser.add_argument("--cache-url", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()

    fresh_database(args.database_url)
    redis.Redis.from_url(args.cache_url).flushdb()
    log = Path(tempfile.mkdtemp(prefix="sluice-soak-")) / "server.log"
    env = server_env(DATABASE_URL=args.database_url, CACHE_URL=args.cache_url, SLUICE_ENGINE="fake",
                     SLUICE_FAKE_TOKEN_DELAY_S="0.002")
    manage(env, "migrate", "--noinput")
    key = manage(env, "create_api_key", "--account", "soak").strip().splitlines()[-1]
    with psycopg.connect(args.database_url, autocommit=True) as db:  # no limit may refuse the soak; a quota counts
        db.execute("UPDATE accounts_account SET requests_per_minute = 10000000, tokens_per_minute = 1000000000, "
                   "daily_token_quota = 1000000000000")
    server = Server(env, workers=2, log_path=log).start()
    try:
        warm = Client(server.url, key, time.monotonic() + 3, 0)
        warm.run()  # both workers' first requests load their moderation components
        warm_tokens, warm_served = warm.tokens, warm.served
        pids = worker_pids(server)
        rss_start = [rss_mb(pid) for pid in pids]
        db_start = connections(args.database_url)
        print(f"soak: {args.seconds:.0f} s, {args.clients} clients, 2 workers, fake engine, load {load_average()}")

        end = time.monotonic() + args.seconds
        clients = [Client(server.url, key, end, index) for index in range(args.clients)]
        started = time.monotonic()
        for client in clients:
            client.start()
        db_peak = db_start
        while any(client.is_alive() for client in clients):
            db_peak = max(db_peak, connections(args.database_url))
            time.sleep(2)
        elapsed = time.monotonic() - started
        db_end = connections(args.database_url)
        rss_end = [rss_mb(pid) for pid in pids if Path(f"/proc/{pid}").exists()]
        load_end = load_average()

        served = sum(c.served for c in clients)
        sent = sum(c.sent for c in clients)
        errors: dict[str, int] = {}
        for client in clients:
            for name, count in client.errors.items():
                errors[name] = errors.get(name, 0) + count
        print(f"requests: {sent} sent, {served} served, {served / elapsed:.1f} requests/s; errors: "
              f"{sum(errors.values())} {errors or ''}")
        for kind in ("whole", "stream"):
            values = [v for c in clients for v in c.latencies[kind]]
            print(f"  {kind:6}: {len(values)} served, p50 {percentile(values, 50):.1f} ms, "
                  f"p95 {percentile(values, 95):.1f} ms")
        print(f"worker RSS (MB): start {' / '.join(f'{v:.0f}' for v in rss_start)}, "
              f"end {' / '.join(f'{v:.0f}' for v in rss_end)}; workers restarted: {worker_pids(server) != pids}")
        print(f"PostgreSQL connections to the soak database: start {db_start}, peak {db_peak}, end {db_end}")
        print(f"load average at the end: {load_end}")
        checks = reconcile(args.database_url, served + warm_served, sum(c.tokens for c in clients) + warm_tokens)
        for name, held, detail in checks:
            print(f"reconcile: {'OK  ' if held else 'FAIL'} {name}: {detail}")
        return 0 if all(held for _, held, _ in checks) and not errors else 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
