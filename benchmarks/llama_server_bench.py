"""Sluice against llama.cpp's llama-server: the same GGUF file, the same clients, one run (issue 15).

1. llama-server is built once from the vendored source of the PyPI sdist llama-cpp-python==0.3.36
   (vendor/llama.cpp; the flag set below; about 10 minutes on 2 cores, nice 19) into a cache outside the
   repository (--cache, default ~/.cache/sluice-bench/llama.cpp-0.3.36) and reused from there.
2. It serves the packaged SmolLM2-135M-Instruct.Q4_1.gguf with 16 slots and every CPU (-np 16 -cb -t N).
3. Sluice starts as `make serve` starts it (gunicorn, its defaults: output moderation on) on a free port.
4. The same client load runs against each: C = 16, 4, 1 concurrent streaming chat requests x 128 greedy
   tokens with ignore_eos. Printed: tokens/s, TTFT p95, Sluice / llama-server, Sluice's peak RSS after C = 16,
   its restart-to-ready time with the caches in place, and the weight format's full quality check against
   float32 (inference/weight_quality.py). `uptime` before and after.

Run from the project root, on a quiet machine (see the team's benchmark lock):
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/llama_server_bench.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402

from benchmarks.scheduler_bench import QUESTIONS  # noqa: E402
from benchmarks.serve_bench import peak_rss_mb, percentile, prepare_caches, start_server  # noqa: E402
from tests.servers import free_port  # noqa: E402

LLAMA_CPP_PYTHON = "0.3.36"
CMAKE_FLAGS = ["-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON", "-DGGML_AVX512=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
               "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DBUILD_SHARED_LIBS=OFF"]
DEFAULT_CACHE = Path.home() / ".cache" / "sluice-bench" / f"llama.cpp-{LLAMA_CPP_PYTHON}"
MODEL = "SmolLM2-135M-Instruct"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def llama_server_binary(cache: Path) -> Path:
    """The cached llama-server, built first if missing (never inside the repository)."""
    source = cache / "vendor" / "llama.cpp"
    binary = source / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    cache.parent.mkdir(parents=True, exist_ok=True)
    if not source.exists():
        print(f"downloading llama-cpp-python=={LLAMA_CPP_PYTHON} (sdist) into {cache.parent}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "--no-deps",
                        "--no-binary", ":all:", "-d", str(cache.parent)], check=True)
        archive = cache.parent / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
        with tarfile.open(archive) as tar:
            tar.extractall(cache.parent, filter="data")
        (cache.parent / f"llama_cpp_python-{LLAMA_CPP_PYTHON}").rename(cache)
    print(f"building llama-server in {source} (about 10 minutes on 2 cores)", flush=True)
    nice = ["nice", "-n", "19"]
    subprocess.run([*nice, "cmake", "-B", "build", *CMAKE_FLAGS], cwd=source, check=True)
    subprocess.run([*nice, "cmake", "--build", "build", "--target", "llama-server", f"-j{os.cpu_count() or 2}"],
                   cwd=source, check=True)
    return binary


def gguf_path() -> Path:
    from inference.model_files import packaged_model_source

    source = packaged_model_source()
    return Path(source.path) / source.gguf_file


def stream_one(url: str, key: str | None, question: str, tokens: int, results: list, gate: threading.Barrier) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": tokens,
            "ignore_eos": True, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    gate.wait()
    started = time.perf_counter()
    arrivals, usage = [], None
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600, headers=headers) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            if chunk.get("choices") and (chunk["choices"][0].get("delta") or {}).get("content"):
                arrivals.append(time.perf_counter())
    tokens_seen = usage["completion_tokens"] if usage else len(arrivals)
    results.append({"started": started, "arrivals": arrivals, "ended": time.perf_counter(), "tokens": tokens_seen})


def drive(url: str, key: str | None, concurrency: int, tokens: int) -> dict:
    results: list = []
    gate = threading.Barrier(concurrency)
    threads = [threading.Thread(target=stream_one, args=(url, key, QUESTIONS[i % len(QUESTIONS)], tokens, results, gate))
               for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    begin, end = min(r["started"] for r in results), max(r["ended"] for r in results)
    ttft = [r["arrivals"][0] - r["started"] for r in results if r["arrivals"]]
    total = sum(r["tokens"] for r in results)
    return {"tokens_per_s": total / (end - begin), "tokens": total, "ttft_p95": percentile(ttft, 0.95)}


def run_load(name: str, url: str, key: str | None, args) -> dict:
    drive(url, key, 2, 8)  # warm-up
    table = {}
    for concurrency in args.concurrency:
        runs = [drive(url, key, concurrency, args.tokens) for _ in range(args.repeat)]
        table[concurrency] = runs
        print(f"[{name}] C={concurrency:<3} tokens/s " + ", ".join(f"{r['tokens_per_s']:.1f}" for r in runs) +
              "  TTFT p95 " + ", ".join(f"{r['ttft_p95']:.2f}" for r in runs) +
              f" s  tokens {runs[0]['tokens']}  ({uptime()})", flush=True)
    return table


def llama_server(binary: Path, threads: int, args) -> dict:
    port = free_port()
    command = [str(binary), "-m", str(gguf_path()), "-np", "16", "-cb", "-t", str(threads), "--host", "127.0.0.1",
               "--port", str(port)]
    log = open(Path(tempfile.gettempdir()) / "sluice-bench-llama-server.log", "wb")
    print("starting " + " ".join(command), flush=True)
    process = subprocess.Popen(command, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama-server exited with {process.returncode}; log: {log.name}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama-server not ready in 120 s; log: {log.name}")
            time.sleep(0.2)
        return run_load("llama-server", url, None, args)
    finally:
        process.terminate()
        process.wait(timeout=30)


def sluice(args) -> tuple[dict, float, list[float]]:
    folder = Path(tempfile.mkdtemp(prefix="sluice-vs-llama-"))
    prepare_caches(folder)  # converts and packs the model once if that is not done yet: what follows are restarts
    server, key, ready_s = start_server(folder, "serve")
    print(f"[sluice] ready in {ready_s:.2f} s (caches in place); weight format "
          f"{os.environ.get('SLUICE_WEIGHT_FORMAT') or 'default'}", flush=True)
    restarts = [ready_s]
    try:
        table = {}
        drive(server.url, key, 2, 8)
        for concurrency in args.concurrency:
            runs = [drive(server.url, key, concurrency, args.tokens) for _ in range(args.repeat)]
            table[concurrency] = runs
            print(f"[sluice] C={concurrency:<3} tokens/s " + ", ".join(f"{r['tokens_per_s']:.1f}" for r in runs) +
                  "  TTFT p95 " + ", ".join(f"{r['ttft_p95']:.2f}" for r in runs) +
                  f" s  tokens {runs[0]['tokens']}  ({uptime()})", flush=True)
            if concurrency == 16:
                rss = peak_rss_mb(server)
                print(f"[sluice] peak RSS after C=16: {rss:.0f} MB", flush=True)
    finally:
        server.stop()
    for attempt in range(args.restarts):
        again, _, ready_s = start_server(folder, f"restart{attempt}")
        again.stop()
        restarts.append(ready_s)
        print(f"[sluice] restart to ready: {ready_s:.2f} s", flush=True)
    return table, rss if 16 in args.concurrency else float("nan"), restarts


def quality() -> None:
    import torch

    from django.conf import settings

    from inference.model_files import load_model_and_tokenizer, model_source_from_settings
    from inference.weight_quality import compare

    source = model_source_from_settings(settings.SLUICE_MODEL_PATH, settings.SLUICE_MODEL_GGUF_FILE)
    cache = ROOT / "var" / "models"
    reference, tokenizer = load_model_and_tokenizer(source, dtype=torch.float32, cache_dir=cache)
    served, _ = load_model_and_tokenizer(source, dtype=torch.float32, cache_dir=cache,
                                         weight_format=settings.SLUICE_WEIGHT_FORMAT)
    report = compare(reference, served, tokenizer)
    served_format = getattr(served, "weight_format", settings.SLUICE_WEIGHT_FORMAT)
    print(f"quality of {served_format} (SLUICE_WEIGHT_FORMAT={settings.SLUICE_WEIGHT_FORMAT}) against float32: "
          f"{report.summary()}")
    print(f"  first differing token per prompt (None: all {32} agree): {list(report.first_disagreements)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 4, 1])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3, help="runs per point; the median is compared")
    parser.add_argument("--restarts", type=int, default=1, help="extra restarts timed after the load")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where llama.cpp is built and kept")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="llama-server -t")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--sluice-only", action="store_true", help="a smoke run: no llama-server, no ratios")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "platform.settings")
    os.environ.setdefault("SLUICE_VAR_DIR", tempfile.mkdtemp(prefix="sluice-bench-var-"))
    import django

    django.setup()

    if args.sluice_only:
        ours, rss, restarts = sluice(args)
        print(f"restart to ready: {restarts}; peak RSS {rss:.0f} MB; {uptime()}")
        return
    binary = llama_server_binary(args.cache)
    print(f"start: {uptime()}", flush=True)
    theirs = llama_server(binary, args.threads, args)
    ours, rss, restarts = sluice(args)
    print(f"\nMedians of {args.repeat} runs per point ({args.tokens} tokens per request, streaming, greedy, ignore_eos):")
    print("C    llama-server tok/s  Sluice tok/s  Sluice/llama  TTFT p95 llama / Sluice")
    for concurrency in args.concurrency:
        a = statistics.median(r["tokens_per_s"] for r in theirs[concurrency])
        b = statistics.median(r["tokens_per_s"] for r in ours[concurrency])
        ta = statistics.median(r["ttft_p95"] for r in theirs[concurrency])
        tb = statistics.median(r["ttft_p95"] for r in ours[concurrency])
        print(f"{concurrency:<4} {a:18.1f} {b:13.1f} {b / a:13.2f}  {ta:.2f} / {tb:.2f} s")
    print(f"Sluice peak RSS after C=16: {rss:.0f} MB; restart to ready (/readyz, caches in place): "
          + ", ".join(f"{r:.2f}" for r in restarts) + " s")
    print(f"end of load: {uptime()}", flush=True)
    if not args.skip_quality:
        quality()
    print(f"end: {uptime()}")


if __name__ == "__main__":
    main()
