"""What the gateway itself adds in remote mode: per request and per streamed chunk, against the upstream direct.

The upstream is a tiny OpenAI-compatible stub (its own process) that streams N fixed chunks as fast as it can,
so every difference is the gateway's: auth, rate limits, quota reservation and settlement, the usage row,
moderation of input and output (every text judged: the cache of recent detections is off, since every
request here repeats the same texts), parsing the upstream's events and re-encoding them. The gateway is a Sluice
gunicorn server with SLUICE_LOCAL_MODEL=0 forwarding to the stub. One client, sequential requests, the direct
and gateway calls interleaved so that both see the same machine load. Measured twice: with the built-in
moderation policy, and with moderation turned off by policy (the transport and bookkeeping alone).

Figures per request: time to the first content chunk and to the end of a short stream (8 chunks).
Figures per chunk: a long stream (200 chunks); the added time per chunk is
(gateway total - direct total - added time to first chunk) / chunks, and the client-side gaps between chunks.

Run from the project root:
    .venv/bin/python benchmarks/gateway_overhead.py [--requests 60] [--long-requests 12] [--chunks 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402

REMOTE = "stub-model"
POLICY_CACHE_S = 1
SHORT_CHUNKS = 8


# --- the upstream stub (run as its own process: python benchmarks/gateway_overhead.py --stub) ---

class StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def do_GET(self):  # health probe: GET /v1/models
        self._send(200, "application/json", json.dumps({"object": "list", "data": [{"id": REMOTE}]}).encode())

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        chunks = int(body.get("max_tokens") or SHORT_CHUNKS)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        write = self.wfile.write
        for index in range(chunks):
            write(b'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"w%d "},'
                  b'"finish_reason":null}]}\n\n' % index)
            self.wfile.flush()
        write(b'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}\n\n')
        usage = {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks}
        write(b"data: " + json.dumps({"object": "chat.completion.chunk", "choices": [], "usage": usage}).encode() + b"\n\n")
        write(b"data: [DONE]\n\n")

    def _send(self, status, content_type, payload):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def run_stub() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubHandler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


# --- measuring ---

def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def timed_stream(client: httpx.Client, url: str, key: str | None, model: str, chunks: int) -> dict:
    """One streamed chat completion read to the end: first-content time, total time, gaps between chunks."""
    body = {"model": model, "messages": [{"role": "user", "content": "Tell me a short story."}], "max_tokens": chunks,
            "stream": True}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    started = time.perf_counter()
    arrivals = []
    with client.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}: {response.read()[:300]!r}")
        for line in response.iter_lines():
            if line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                arrivals.append(time.perf_counter())
    ended = time.perf_counter()
    if not arrivals:
        raise RuntimeError(f"{url} streamed no content")
    return {
        "first": arrivals[0] - started,
        "total": ended - started,
        "gaps": [b - a for a, b in zip(arrivals, arrivals[1:])],
        "content_chunks": len(arrivals),
    }


def compare(client, direct_url, gateway_url, key, *, chunks: int, requests: int) -> dict:
    for _ in range(3):  # warm connections, caches, moderation
        timed_stream(client, direct_url, None, REMOTE, chunks)
        timed_stream(client, gateway_url, key, REMOTE, chunks)
    direct, gateway = [], []
    for _ in range(requests):
        direct.append(timed_stream(client, direct_url, None, REMOTE, chunks))
        gateway.append(timed_stream(client, gateway_url, key, REMOTE, chunks))
    return {"direct": direct, "gateway": gateway}


def ms(value: float) -> str:
    return f"{value * 1000:8.2f}"


def report(title: str, short: dict, long: dict, chunks: int) -> None:
    print(f"\n== {title}")
    print(f"{'':42} {'p50 ms':>8} {'p95 ms':>8}")
    rows = []
    for name, runs in (("direct", short["direct"]), ("gateway", short["gateway"])):
        rows.append((f"short stream ({SHORT_CHUNKS} chunks) first chunk, {name}", [r["first"] for r in runs]))
        rows.append((f"short stream ({SHORT_CHUNKS} chunks) total, {name}", [r["total"] for r in runs]))
    added_first = [g["first"] - d["first"] for d, g in zip(short["direct"], short["gateway"])]
    added_total = [g["total"] - d["total"] for d, g in zip(short["direct"], short["gateway"])]
    rows.append(("added per request, to first chunk", added_first))
    rows.append(("added per request, whole short stream", added_total))
    for name, runs in (("direct", long["direct"]), ("gateway", long["gateway"])):
        rows.append((f"long stream ({chunks} chunks) total, {name}", [r["total"] for r in runs]))
        rows.append((f"gap between chunks at the client, {name}", [gap for r in runs for gap in r["gaps"]]))
    per_chunk = [
        ((g["total"] - d["total"]) - (g["first"] - d["first"])) / chunks for d, g in zip(long["direct"], long["gateway"])
    ]
    rows.append(("added per streamed chunk", per_chunk))
    for label, values in rows:
        print(f"{label:42} {ms(statistics.median(values))} {ms(percentile(values, 0.95))}")
    received = [r["content_chunks"] for r in long["gateway"]]
    note = " (output moderation releases checked text in runs of 32+ characters)" if min(received) < chunks else ""
    print(f"content chunks the client received per long stream: direct {chunks}, gateway {min(received)}-{max(received)}"
          + note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=60, help="short streams per path and mode")
    parser.add_argument("--long-requests", type=int, default=12, help="long streams per path and mode")
    parser.add_argument("--chunks", type=int, default=200, help="chunks in a long stream")
    parser.add_argument("--stub", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stub:
        run_stub()
        return

    from tests.servers import Server, manage, server_env

    stub = subprocess.Popen([sys.executable, __file__, "--stub"], stdout=subprocess.PIPE, text=True)
    port = int(stub.stdout.readline())
    direct_url = f"http://127.0.0.1:{port}/v1/chat/completions"
    folder = Path(tempfile.mkdtemp(prefix="sluice-gateway-bench-"))
    remote = json.dumps({REMOTE: {"urls": [f"http://127.0.0.1:{port}/v1"], "tokenizer": "none"}})
    env = server_env(
        DATABASE_URL=f"sqlite:///{folder / 'db.sqlite3'}", CACHE_URL="locmem://", SLUICE_LOCAL_MODEL="0",
        SLUICE_REMOTE_MODELS=remote, SLUICE_MAX_NEW_TOKENS=str(max(args.chunks, SHORT_CHUNKS)),
        # Every request here sends and receives the same texts: with the cache of recent detections they
        # would be judged once. Off, every check is made, as for new texts.
        SLUICE_MODERATION_CACHE_ENTRIES="0",
        # A policy saved by another process reaches the server within this time: the runs wait that long
        # after switching moderation off and on again.
        SLUICE_POLICY_CACHE_S=str(POLICY_CACHE_S),
    )
    manage(env, "migrate", "--noinput")
    key = manage(env, "create_api_key", "--account", "bench").strip().splitlines()[-1]
    manage(env, "shell", "-c", "from accounts.models import Account; "
           "Account.objects.update(requests_per_minute=10**6, tokens_per_minute=10**9)")
    server = Server(env, log_path=folder / "gateway.log").start()
    print(f"upstream stub on :{port}; gateway (gunicorn, 1 worker, SLUICE_LOCAL_MODEL=0) on {server.url}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    try:
        with httpx.Client(timeout=120) as client:
            gateway_url = f"{server.url}/v1/chat/completions"
            # One moderated request first: it waits until the worker's moderation components have loaded, so
            # their loading (seconds of CPU in a background thread) does not weigh on the first figures.
            timed_stream(client, gateway_url, key, REMOTE, SHORT_CHUNKS)
            manage(env, "shell", "-c", "from moderation.models import ModerationPolicy; "
                   "ModerationPolicy.objects.create(name='off', check_input=False, check_output=False)")
            time.sleep(POLICY_CACHE_S + 0.5)
            short = compare(client, direct_url, gateway_url, key, chunks=SHORT_CHUNKS, requests=args.requests)
            long = compare(client, direct_url, gateway_url, key, chunks=args.chunks, requests=args.long_requests)
            report("moderation off by policy: transport, auth, limits, quota, usage row", short, long, args.chunks)
            manage(env, "shell", "-c", "from moderation.models import ModerationPolicy; ModerationPolicy.objects.all().delete()")
            time.sleep(POLICY_CACHE_S + 0.5)
            short = compare(client, direct_url, gateway_url, key, chunks=SHORT_CHUNKS, requests=args.requests)
            long = compare(client, direct_url, gateway_url, key, chunks=args.chunks, requests=args.long_requests)
            report("built-in moderation policy (input and output checked)", short, long, args.chunks)
    finally:
        server.stop()
        stub.terminate()
        stub.wait()
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
