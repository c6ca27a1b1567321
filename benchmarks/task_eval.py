"""Scores /v1/sentiment and /v1/qa over HTTP on public test data (never trained, tuned or calibrated on).

Starts the server as the README does (embedded defaults, one process), makes a key, and sends each item as
its own request from C concurrent clients (so requests share batches, as real traffic would):
  - SST-2 dev (872 sentences): accuracy. References: majority 50.9%, VADER 63.1%, DistilBERT-SST-2 91.3%.
  - SQuAD v1.1 dev, first 300 questions: exact match and F1 with the official answer normalization, and the
    share of answers that are spans of the context. Reference: BERT-base 80.8 EM / 88.5 F1 (full dev set).
It prints the scores, items/s and p50 latency per item, next to the figures of the generator-prompting tasks
that the trained models replaced (measured the same way: 5.2 items/s sentiment, 1.04 items/s QA), and the
load average.

    .venv/bin/python benchmarks/task_eval.py [--limit N] [--concurrency 8] [--data-dir ../shared/data/eval]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import string
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from benchmarks.serve_bench import peak_rss_mb, percentile, start_server  # noqa: E402


def normalize_answer(text: str) -> str:
    """The official SQuAD v1.1 normalization: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def f1_score(prediction: str, truth: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(predicted) & collections.Counter(expected)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


def run_items(url: str, key: str, path: str, bodies: list[dict], concurrency: int) -> tuple[list, list, float]:
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600)

    def one(body):
        started = time.perf_counter()
        response = client.post(path, json=body)
        return response, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        outcomes = list(pool.map(one, bodies))
    elapsed = time.perf_counter() - started
    return [o[0] for o in outcomes], [o[1] for o in outcomes], elapsed


def sentiment(url: str, key: str, data_dir: Path, limit: int | None, concurrency: int) -> None:
    rows = [line.rstrip("\n").split("\t") for line in (data_dir / "sst2_dev.tsv").read_text().splitlines()[1:]]
    rows = rows[:limit] if limit else rows
    responses, latencies, elapsed = run_items(url, key, "/v1/sentiment", [{"input": t} for t, _ in rows], concurrency)
    correct = refused = 0
    for (text, label), response in zip(rows, responses):
        if response.status_code != 200:
            refused += 1
            continue
        predicted = response.json()["data"][0]["label"]
        correct += (predicted == "positive") == (label == "1")
    print(f"SST-2 dev ({len(rows)} sentences): accuracy {100 * correct / len(rows):.1f}%  "
          f"(refused: {refused}; references: majority 50.9%, VADER 63.1%, DistilBERT 91.3%)")
    print(f"  {len(rows) / elapsed:.1f} items/s, p50 latency {percentile(latencies, 0.5) * 1000:.0f} ms per item "
          f"(C={concurrency}; before, the prompted generator: 84.6 %, 5.2 items/s; load average {os.getloadavg()[0]:.1f})")


def squad(url: str, key: str, data_dir: Path, limit: int | None, concurrency: int) -> None:
    items = [json.loads(line) for line in (data_dir / "squad_dev_300.jsonl").read_text().splitlines()]
    items = items[:limit] if limit else items
    bodies = [{"question": item["question"], "context": item["context"]} for item in items]
    responses, latencies, elapsed = run_items(url, key, "/v1/qa", bodies, concurrency)
    exact = f1 = spans = abstained = refused = 0
    for item, response in zip(items, responses):
        if response.status_code != 200:
            refused += 1
            continue
        result = response.json()["data"][0]
        answer = result["answer"]
        if answer is None:
            abstained += 1
            continue
        spans += item["context"][result["start"]:result["end"]] == answer
        truths = [a["text"] for a in item["answers"]]
        exact += max(normalize_answer(answer) == normalize_answer(t) for t in truths)
        f1 += max(f1_score(answer, t) for t in truths)
    n = len(items)
    print(f"SQuAD v1.1 dev, first {n}: EM {100 * exact / n:.1f}  F1 {100 * f1 / n:.1f}  "
          f"(answers that are context spans: {spans}/{n - abstained - refused}; no answer: {abstained}; "
          f"refused: {refused}; reference BERT-base 80.8 / 88.5)")
    print(f"  {n / elapsed:.2f} items/s, p50 latency {percentile(latencies, 0.5) * 1000:.0f} ms per item "
          f"(C={concurrency}; before, the prompted generator: F1 44.6, 1.04 items/s; load average {os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "eval")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--only", choices=["sentiment", "qa"], default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="sluice-task-eval-"))
    server, key, ready = start_server(folder, "tasks")
    print(f"server ready in {ready:.1f} s", flush=True)
    try:
        if args.only in (None, "sentiment"):
            sentiment(server.url, key, args.data_dir, args.limit, args.concurrency)
        if args.only in (None, "qa"):
            squad(server.url, key, args.data_dir, args.limit, args.concurrency)
        print(f"server peak RSS {peak_rss_mb(server):.0f} MB (generator, moderation and both task models)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
