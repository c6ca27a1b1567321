"""End-to-end serving benchmark: the server as the README starts it, driven over HTTP by streaming clients.

Part 1 (the embedded model). For C concurrent streaming chat clients (128 tokens each, ignore_eos) it prints
aggregate tokens/s, time-to-first-token p50/p95, inter-chunk latency p50/p95 and the server's peak RSS, for:
  batched   the server on its defaults (continuous batching, SLUICE_MAX_BATCH_SIZE=16)
  off       the same server with SLUICE_MAX_BATCH_SIZE=1: one sequence at a time, like the Flask example
  ceiling   plain model.generate on a static batch of the C prompts, in this process, no server
and the ratios batched/ceiling and batched/off. It also times a restart with the model conversion cached.

Part 2 (--overhead): the platform's own cost per request, on the fake engine, in this process: a tiny chat
completion through the full path (auth, limits, quota, moderation, usage row) against a bare DRF endpoint.
"full path" judges every text (the cache of recent detections off); "full, remembered" repeats one request
with the cache on (a re-sent conversation); "no moderation" is an account whose policy checks nothing.

Run from the project root (never through a console script; see DESIGN.md):
    .venv/bin/python benchmarks/serve_bench.py [--concurrency 1 4 16] [--tokens 128] [--repeat 1]
    .venv/bin/python benchmarks/serve_bench.py --overhead
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

from benchmarks.scheduler_bench import QUESTIONS  # noqa: E402  (the same prompts as the in-process benchmark)
from tests.servers import Server, manage, server_env  # noqa: E402

MODEL = "SmolLM2-135M-Instruct"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def peak_rss_mb(server: Server) -> float:
    """Peak resident memory (VmHWM) of the server's processes: the gunicorn worker holds the model."""
    import psutil

    peak = 0
    for process in [psutil.Process(server.process.pid), *psutil.Process(server.process.pid).children(recursive=True)]:
        with open(f"/proc/{process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
    return peak / 1024


def stream_one(url: str, key: str, question: str, tokens: int, results: list, start_gate: threading.Barrier):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start_gate.wait()
    started = time.perf_counter()
    arrivals, usage = [], None
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600,
                      headers={"Authorization": f"Bearer {key}"}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                arrivals.append(time.perf_counter())
    results.append({"started": started, "arrivals": arrivals, "ended": time.perf_counter(),
                    "tokens": usage["completion_tokens"] if usage else 0})


def drive(url: str, key: str, concurrency: int, tokens: int) -> dict:
    results: list = []
    gate = threading.Barrier(concurrency)
    threads = [
        threading.Thread(target=stream_one, args=(url, key, QUESTIONS[i % len(QUESTIONS)], tokens, results, gate))
        for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    begin = min(r["started"] for r in results)
    end = max(r["ended"] for r in results)
    ttft = [r["arrivals"][0] - r["started"] for r in results if r["arrivals"]]
    gaps = [b - a for r in results for a, b in zip(r["arrivals"], r["arrivals"][1:])]
    total = sum(r["tokens"] for r in results)
    return {"tokens_per_s": total / (end - begin), "tokens": total, "ttft_p50": percentile(ttft, 0.5),
            "ttft_p95": percentile(ttft, 0.95), "itl_p50": percentile(gaps, 0.5), "itl_p95": percentile(gaps, 0.95)}


def static_ceiling(concurrency: int, tokens: int) -> float:
    """Plain model.generate on one static left-padded batch, in this process (no server running)."""
    import torch

    from inference.model_files import load_model_and_tokenizer, packaged_model_source

    model, tokenizer = load_model_and_tokenizer(
        packaged_model_source(), dtype=torch.float32, cache_dir=ROOT / "var" / "models"
    )
    tokenizer.padding_side = "left"
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                                      add_generation_prompt=True, tokenize=False)
        for i in range(concurrency)
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        model.generate(**batch, max_new_tokens=4, do_sample=False)  # warm-up
        started = time.perf_counter()
        out = model.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        elapsed = time.perf_counter() - started
    generated = (out.shape[1] - batch["input_ids"].shape[1]) * concurrency
    return generated / elapsed


def start_server(folder: Path, name: str, **overrides: str) -> tuple[Server, str, float]:
    env = server_env(
        SLUICE_VAR_DIR=str(folder / name),
        SLUICE_MODEL_CACHE_DIR=str(ROOT / "var" / "models"),
        DATABASE_URL=f"sqlite:///{folder / name / 'db.sqlite3'}",
        **overrides,
    )
    (folder / name).mkdir(parents=True, exist_ok=True)
    manage(env, "migrate", "--noinput")
    manage(env, "shell", "-c", "from accounts.models import Account; Account.objects.get_or_create(name='bench', "
                               "defaults={'requests_per_minute': 100000, 'tokens_per_minute': 100000000})")
    key = manage(env, "create_api_key", "--account", "bench").strip().splitlines()[-1]
    started = time.perf_counter()
    server = Server(env, log_path=folder / f"{name}.log").start(timeout=600)
    return server, key, time.perf_counter() - started


def prepare_caches(folder: Path) -> None:
    """The first start converts the packaged GGUF and builds the moderation encoder; later starts load both
    from var/models. Do that once here, so every start below is a restart with the caches in place."""
    env = server_env(SLUICE_VAR_DIR=str(folder / "prepare"), SLUICE_MODEL_CACHE_DIR=str(ROOT / "var" / "models"),
                     DATABASE_URL=f"sqlite:///{folder / 'prepare.sqlite3'}")
    started = time.perf_counter()
    manage(env, "shell", "-c", "from inference.engines.factory import get_engine; from moderation.detectors import detect; "
                               "get_engine(); detect('warm up')")
    print(f"caches ready in {time.perf_counter() - started:.1f} s (a first start's conversion, or nothing to do)",
          flush=True)


def serving(args) -> None:
    folder = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    prepare_caches(folder)
    modes = {"batched": {}, "off": {"SLUICE_MAX_BATCH_SIZE": "1"}}
    table: dict = {}
    restarts: list[float] = []
    for mode, overrides in modes.items():
        server, key, ready_s = start_server(folder, mode, **overrides)
        restarts.append(ready_s)
        print(f"[{mode}] server ready in {ready_s:.1f} s (model and moderation caches in place)", flush=True)
        try:
            drive(server.url, key, 2, 8)  # warm-up
            for concurrency in args.concurrency:
                runs = [drive(server.url, key, concurrency, args.tokens) for _ in range(args.repeat)]
                table[(mode, concurrency)] = runs
                best = max(runs, key=lambda r: r["tokens_per_s"])
                print(f"[{mode}] C={concurrency:<3} tokens/s={best['tokens_per_s']:7.1f} "
                      f"(runs: {', '.join(format(r['tokens_per_s'], '.1f') for r in runs)}) "
                      f"TTFT p50/p95={best['ttft_p50']:.2f}/{best['ttft_p95']:.2f} s "
                      f"inter-chunk p50/p95={best['itl_p50'] * 1000:.0f}/{best['itl_p95'] * 1000:.0f} ms", flush=True)
            table[(mode, "rss")] = peak_rss_mb(server)
            print(f"[{mode}] peak RSS {table[(mode, 'rss')]:.0f} MB", flush=True)
        finally:
            server.stop()
    ceilings = {c: static_ceiling(c, args.tokens) for c in args.concurrency}
    print("\nMedians of the runs per point (batched min-max shows the machine's noise):")
    print("C    batched tok/s (min-max)  off tok/s  ceiling tok/s  batched/ceiling  batched/off  TTFT p95  peak RSS")
    for concurrency in args.concurrency:
        runs = [r["tokens_per_s"] for r in table[("batched", concurrency)]]
        batched = statistics.median(runs)
        off = statistics.median(r["tokens_per_s"] for r in table[("off", concurrency)])
        ttft = statistics.median(r["ttft_p95"] for r in table[("batched", concurrency)])
        print(f"{concurrency:<4} {batched:13.1f} ({min(runs):5.1f}-{max(runs):5.1f}) {off:10.1f} {ceilings[concurrency]:14.1f} "
              f"{batched / ceilings[concurrency]:16.2f} {batched / off:12.2f} {ttft:8.2f}s "
              f"{table[('batched', 'rss')]:7.0f}MB")
    print(f"restart to ready (/readyz true: model and moderation loaded), caches in place: "
          f"{', '.join(f'{r:.1f}' for r in restarts)} s")


def overhead(args) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "platform.settings")
    os.environ["SLUICE_VAR_DIR"] = tempfile.mkdtemp(prefix="sluice-overhead-")
    os.environ["ALLOWED_HOSTS"] = "testserver"
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import override_settings
    from django.urls import include, path
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from accounts.models import Account
    from accounts.services import key_create
    from inference.engines.factory import set_engine
    from inference.engines.fake import FakeEngine
    from moderation.models import ModerationPolicy

    class Bare(APIView):
        authentication_classes: list = []
        permission_classes: list = []
        throttle_classes: list = []

        def post(self, request):
            return Response({"ok": True, "echo": request.data.get("model")})

    urls = type(sys)("bench_urls")
    urls.urlpatterns = [path("bare", Bare.as_view()), path("", include("platform.urls"))]
    sys.modules["bench_urls"] = urls

    call_command("migrate", verbosity=0)
    account = Account.objects.create(name="overhead", requests_per_minute=10**6, tokens_per_minute=10**9,
                                     daily_token_quota=10**12)
    key = key_create(account=account).plaintext
    unmoderated = Account.objects.create(name="no moderation", requests_per_minute=10**6, tokens_per_minute=10**9,
                                         daily_token_quota=10**12)
    ModerationPolicy.objects.create(name="off", account=unmoderated, check_input=False, check_output=False)
    unmoderated_key = key_create(account=unmoderated).plaintext
    engine = FakeEngine(model_id=MODEL)
    engine.default_reply = "Hi."
    set_engine(engine)
    client = Client()
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 4})

    def timed(call, n):
        durations = []
        for _ in range(n):
            started = time.perf_counter()
            response = call()
            durations.append(time.perf_counter() - started)
            assert response.status_code == 200, response.content
        return durations

    with override_settings(ROOT_URLCONF="bench_urls"):
        full = lambda: client.post("/v1/chat/completions", body, content_type="application/json",  # noqa: E731
                                   HTTP_AUTHORIZATION=f"Bearer {key}")
        unremembered = override_settings(SLUICE_MODERATION_CACHE_ENTRIES=0)
        no_moderation = lambda: client.post("/v1/chat/completions", body,  # noqa: E731
                                            content_type="application/json",
                                            HTTP_AUTHORIZATION=f"Bearer {unmoderated_key}")
        bare = lambda: client.post("/bare", body, content_type="application/json")  # noqa: E731
        timed(full, 20), timed(no_moderation, 20), timed(bare, 20)  # warm-up: loads the moderation components
        with unremembered:
            results = {"full path": timed(full, args.requests)}
        results.update({"full, remembered": timed(full, args.requests),
                        "no moderation": timed(no_moderation, args.requests), "bare DRF": timed(bare, args.requests)})
    print(f"{'':16} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8}")
    for name, durations in results.items():
        print(f"{name:16} {len(durations) / sum(durations):8.1f} {percentile(durations, 0.5) * 1000:8.2f} "
              f"{percentile(durations, 0.95) * 1000:8.2f}")
    added = [percentile(results["full path"], q) - percentile(results["bare DRF"], q) for q in (0.5, 0.95)]
    print(f"platform overhead per request, every text judged: p50 {added[0] * 1000:.2f} ms, "
          f"p95 {added[1] * 1000:.2f} ms")
    known = [percentile(results["full, remembered"], q) - percentile(results["bare DRF"], q) for q in (0.5, 0.95)]
    print(f"  the same request repeated (its texts' detections remembered): p50 {known[0] * 1000:.2f} ms, "
          f"p95 {known[1] * 1000:.2f} ms")
    plain = [percentile(results["no moderation"], q) - percentile(results["bare DRF"], q) for q in (0.5, 0.95)]
    print(f"  of which without moderation (auth, limits, quota, usage row): p50 {plain[0] * 1000:.2f} ms, "
          f"p95 {plain[1] * 1000:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=1, help="runs per point (report min/median/max noise)")
    parser.add_argument("--overhead", action="store_true", help="part 2: platform overhead on the fake engine")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    overhead(args) if args.overhead else serving(args)


if __name__ == "__main__":
    main()
