"""Fair sharing between accounts, on the real model, over HTTP (issue 18).

Account A ("heavy") keeps --a-streams concurrent streaming chats of --a-tokens tokens open (a finished one is
replaced at once); account B ("light") sends one --b-tokens streaming chat every --b-interval seconds for
--seconds seconds. Three servers, one after another, as `make serve` starts them (gunicorn, one worker):

  alone  B only, on an idle server (fair sharing on)
  fair   A and B, SLUICE_FAIR_SHARING=1
  fcfs   A and B, SLUICE_FAIR_SHARING=0 (first come, first served: the scheduler before issue 18)

For each it prints B's time to first token p50/p95 (client side, request sent to the first text), B's tokens/s
per request (completion tokens over the time from its first text to its end), how many of B's requests were
served, and the total tokens/s the engine decoded while B was sending (read from /metrics'
sluice_engine_account_decoded_tokens, so every account's tokens are counted exactly, not chunks); then the
ratios fair/fcfs. Every request asks for exactly its tokens (ignore_eos, temperature 0).

Run it alone on the machine (team rules: under the benchmark lock, training paused), from the project root:
    flock /work/wt/bench.lock .venv/bin/python benchmarks/fair_share_bench.py [--seconds 60] [--modes alone fair fcfs]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402

from benchmarks.scheduler_bench import QUESTIONS  # noqa: E402
from benchmarks.serve_bench import percentile, prepare_caches  # noqa: E402
from tests.servers import Server, manage, server_env  # noqa: E402

MODEL = "SmolLM2-135M-Instruct"
METRICS_TOKEN = "fair-share-bench"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def stream_chat(url: str, key: str, question: str, tokens: int, record: dict | None = None) -> dict:
    """One streamed chat; ``record`` (filled in as it goes) lets the caller read a request that has not ended."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": tokens,
            "ignore_eos": True, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    record = {} if record is None else record
    started = record["started"] = time.perf_counter()
    first = None
    usage = None
    status = None
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=900,
                          headers={"Authorization": f"Bearer {key}"}) as response:
            status = response.status_code
            if status == 200:
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                        first = record["first"] = time.perf_counter()
            else:
                response.read()
    except httpx.HTTPError as error:
        status = type(error).__name__
    record.update({"status": status, "started": started, "first": first, "ended": time.perf_counter(),
                   "tokens": usage["completion_tokens"] if usage else 0})
    return record


def decoded_tokens(url: str) -> dict[str, float]:
    """Tokens the engine decoded so far, by account id (the worker's counter, read through /metrics)."""
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30).text
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("sluice_engine_account_decoded_tokens_total{"):
            labels, value = line.rsplit(" ", 1)
            account = labels.split('account="', 1)[1].split('"', 1)[0]
            totals[account] = totals.get(account, 0.0) + float(value)
    return totals


class HeavyAccount:
    """``streams`` streams kept open until stopped: each thread starts a new one as soon as its last ends."""

    def __init__(self, url: str, key: str, streams: int, tokens: int):
        self.url, self.key, self.tokens = url, key, tokens
        self.stop = threading.Event()
        self.results: list[dict] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(streams)]

    def _run(self, index: int) -> None:
        n = 0
        while not self.stop.is_set():
            self.results.append(stream_chat(self.url, self.key, QUESTIONS[(index + n) % len(QUESTIONS)], self.tokens))
            n += 1

    def start(self) -> "HeavyAccount":
        for thread in self.threads:
            thread.start()
        return self

    def finish(self) -> None:
        """No new streams; those still open end when the server stops (their threads are daemons)."""
        self.stop.set()


def light_account(url: str, key: str, *, tokens: int, interval: float, seconds: float, drain: float) -> list[dict]:
    """One streaming request every ``interval`` seconds for ``seconds`` seconds, each in its own thread (a
    request that waits does not delay the next one); returns when all have ended, or ``drain`` seconds after
    the last was sent: one still without its first text then counts as waiting since it was sent (``censored``:
    its time to first token is at least that)."""
    records: list[dict] = []
    threads = []
    begin = time.perf_counter()
    n = 0
    while time.perf_counter() - begin < seconds:
        record: dict = {}
        records.append(record)
        thread = threading.Thread(target=stream_chat, args=(url, key, QUESTIONS[n % len(QUESTIONS)], tokens, record),
                                  daemon=True)
        thread.start()
        threads.append(thread)
        n += 1
        time.sleep(max(0.0, begin + n * interval - time.perf_counter()))
    give_up = time.perf_counter() + drain
    for thread in threads:
        thread.join(max(0.0, give_up - time.perf_counter()))
    now = time.perf_counter()
    for record in records:
        if "ended" not in record:  # still streaming, or still waiting for its first text
            record.update(status=200, censored=record.get("first") is None, ended=now, tokens=0)
            record.setdefault("first", None)
            if record["first"] is None:
                record["first"] = now
    return records


def start_server(folder: Path, name: str, fair: bool) -> tuple[Server, dict[str, str], dict[str, str]]:
    env = server_env(
        SLUICE_VAR_DIR=str(folder / name), SLUICE_MODEL_CACHE_DIR=str(ROOT / "var" / "models"),
        DATABASE_URL=f"sqlite:///{folder / name / 'db.sqlite3'}", SLUICE_FAIR_SHARING="1" if fair else "0",
        SLUICE_METRICS_TOKEN=METRICS_TOKEN, SLUICE_THREADS="160",  # every stream of both accounts holds a thread
    )
    (folder / name).mkdir(parents=True, exist_ok=True)
    manage(env, "migrate", "--noinput")
    keys, ids = {}, {}
    for account in ("heavy", "light"):
        ids[account] = manage(env, "shell", "-c", (
            "from accounts.models import Account; a, _ = Account.objects.get_or_create(name='%s', defaults="
            "{'requests_per_minute': 100000, 'tokens_per_minute': 100000000}); print(a.pk)") % account
        ).strip().splitlines()[-1]  # the shell may print other lines first
        keys[account] = manage(env, "create_api_key", "--account", account).strip().splitlines()[-1]
    server = Server(env, log_path=folder / f"{name}.log").start(timeout=600)
    return server, keys, ids


def run_mode(folder: Path, mode: str, args) -> dict:
    server, keys, ids = start_server(folder, mode, fair=mode != "fcfs")
    try:
        stream_chat(server.url, keys["light"], QUESTIONS[0], 8)  # warm-up
        heavy = None
        if mode != "alone":
            heavy = HeavyAccount(server.url, keys["heavy"], args.a_streams, args.a_tokens).start()
            time.sleep(args.settle)  # A's streams fill the batch and the queue first
        print(f"[{mode}] {uptime()}", flush=True)
        results: list[dict] = []
        sending = threading.Thread(target=lambda: results.extend(light_account(
            server.url, keys["light"], tokens=args.b_tokens, interval=args.b_interval, seconds=args.seconds,
            drain=args.drain)))
        before, began = decoded_tokens(server.url), time.perf_counter()
        sending.start()
        time.sleep(max(0.0, began + args.seconds - time.perf_counter()))
        after, window = decoded_tokens(server.url), time.perf_counter() - began
        sending.join()  # B's last requests may still wait (first come, first served)
        if heavy is not None:
            heavy.finish()
        print(f"[{mode}] {uptime()}", flush=True)
    finally:
        server.stop()
    served = [r for r in results if r["status"] == 200 and r["first"] is not None]
    ttft = [r["first"] - r["started"] for r in served]
    censored = sum(1 for r in served if r.get("censored"))
    speeds = [(r["tokens"] - 1) / (r["ended"] - r["first"]) for r in served if r["ended"] > r["first"] and r["tokens"] > 1]
    decoded = {account: after.get(ids[account], 0.0) - before.get(ids[account], 0.0) for account in ids}
    print(f"[{mode}] accounts {ids}; decoded tokens by account id before/after the window: {before} / {after}")
    figures = {
        "b_requests": len(results), "b_served": len(served) - censored, "b_censored": censored,
        "b_refused": sorted({str(r["status"]) for r in results if r["status"] != 200}),
        "ttft_p50": percentile(ttft, 0.5), "ttft_p95": percentile(ttft, 0.95), "ttft_max": max(ttft, default=float("nan")),
        "b_tokens_per_s": statistics.median(speeds) if speeds else float("nan"),
        "total_tokens_per_s": sum(decoded.values()) / window, "a_tokens_per_s": decoded["heavy"] / window,
        "b_share": decoded["light"] / max(1.0, sum(decoded.values())),
    }
    print(f"[{mode}] B: {figures['b_served']}/{figures['b_requests']} served{' refused ' + ','.join(figures['b_refused']) if figures['b_refused'] else ''}, "
          f"{f' ({censored} still waiting at the end: their TTFT counted as the time waited, a lower bound)' if censored else ''}, "
          f"TTFT p50/p95/max {figures['ttft_p50']:.2f}/{figures['ttft_p95']:.2f}/{figures['ttft_max']:.2f} s, "
          f"{figures['b_tokens_per_s']:.1f} tokens/s per request (median); engine {figures['total_tokens_per_s']:.1f} "
          f"tokens/s in the {window:.0f} s window (A {figures['a_tokens_per_s']:.1f}, B's share {figures['b_share']:.1%})",
          flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=["alone", "fair", "fcfs"], choices=["alone", "fair", "fcfs"])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long B sends")
    parser.add_argument("--b-interval", type=float, default=2.0)
    parser.add_argument("--b-tokens", type=int, default=64)
    parser.add_argument("--a-streams", type=int, default=48)
    parser.add_argument("--a-tokens", type=int, default=256)
    parser.add_argument("--settle", type=float, default=8.0, help="seconds A runs alone before B starts")
    parser.add_argument("--drain", type=float, default=120.0,
                        help="seconds to wait for B's last requests after it stops sending (then: lower bounds)")
    args = parser.parse_args()
    print(f"start: {uptime()}", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="sluice-fair-bench-"))
    prepare_caches(folder)
    table = {mode: run_mode(folder, mode, args) for mode in args.modes}
    print(f"\nA: {args.a_streams} streams x {args.a_tokens} tokens; B: one {args.b_tokens}-token stream every "
          f"{args.b_interval:g} s for {args.seconds:g} s")
    print("mode    B TTFT p50   p95     B tok/s/request  B served   engine tok/s  B share")
    for mode, f in table.items():
        print(f"{mode:<7} {f['ttft_p50']:8.2f}s {f['ttft_p95']:6.2f}s {f['b_tokens_per_s']:14.1f} "
              f"{f['b_served']:5d}/{f['b_requests']:<4d} {f['total_tokens_per_s']:12.1f} {f['b_share']:8.1%}")
    if "fair" in table and "fcfs" in table:
        fair, fcfs = table["fair"], table["fcfs"]
        ratio = fair["total_tokens_per_s"] / fcfs["total_tokens_per_s"] if fcfs["total_tokens_per_s"] else float("nan")
        print(f"fair / fcfs: B TTFT p95 {fair['ttft_p95'] / fcfs['ttft_p95']:.3f}x, engine tokens/s {ratio:.3f}x")
    print(f"end: {uptime()}", flush=True)


if __name__ == "__main__":
    main()
