"""The embedding model of ``/v1/embeddings`` in process, side by side in one run:

- as served: concurrent callers, one text per call, batched across callers by the MicroBatcher into float32
  passes of the moderation encoder's weights (``Encoder.embed_ids``), at C = 1 and C = 16;
- the same float32 pass one text at a time (no batching), on the caller's thread;
- moderation's own int8 pass one text at a time (``Encoder.encode_ids``): what a faster but batch-dependent
  path would give (vectors at cosine ~0.98 of the model's);
- moderation's input check of the same texts (``detect_many``), which every request also pays.

Two workloads from the training data (never the eval sets): SST-2 sentences of 8+ words (short queries) and
SQuAD passages cut to 200 word pieces (document chunks). One torch thread, as served. Prints ``uptime``.

    flock /work/wt/bench.lock .venv/bin/python benchmarks/embedding_bench.py
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "platform.settings")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def workloads(count: int) -> dict[str, list[str]]:
    from moderation.training_data import DATA_DIR

    with open(DATA_DIR / "sst2_train" / "train.tsv", newline="") as handle:
        sentences = [row["sentence"] for row in csv.DictReader(handle, delimiter="\t") if len(row["sentence"].split()) >= 8]
    with gzip.open(DATA_DIR / "squad_v1.1_train" / "train-v1.1.reconstructed.json.gz", "rt") as handle:
        squad = json.load(handle)
    contexts = [p["context"] for article in squad["data"] for p in article["paragraphs"]]
    return {"sentences": sentences[:count], "passages": contexts[:count]}


def rate(run, items: int) -> float:
    started = time.perf_counter()
    run()
    return items / (time.perf_counter() - started)


def concurrent(model, pieces: list[list[int]], callers: int) -> None:
    """``callers`` threads, each embedding its share of ``pieces`` one text per call."""
    shares = [pieces[i::callers] for i in range(callers)]
    threads = [threading.Thread(target=lambda share=share: [model.embed([p]) for p in share]) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=128, help="texts per workload")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import django

    django.setup()
    from inference.embedding_model import embedding_model, text_token_ids
    from inference.torch_threads import use_threads
    from moderation.detectors import detect_many

    use_threads(1)
    model = embedding_model()
    encoder = model._encoder
    print(f"start: {uptime()}")
    for name, texts in workloads(args.texts).items():
        pieces = [text_token_ids(text)[:200] for text in texts]
        tokens = sum(len(p) + 2 for p in pieces)
        per_text = tokens / len(pieces)
        model.embed(pieces[:4])  # warm
        runs = {
            "served, C=16": lambda: concurrent(model, pieces, 16),
            "served, C=1": lambda: concurrent(model, pieces, 1),
            "float32, one per pass": lambda: [encoder.embed_ids([p]) for p in pieces],
            "int8, one per pass": lambda: [encoder.encode_ids([p]) for p in pieces],
            "moderation check": lambda: detect_many([f"{text} {round_}" for text in texts]),
        }
        figures: dict[str, list[float]] = {label: [] for label in runs}
        for round_ in range(args.rounds):  # interleaved, so a neighbour's burst hits every path alike
            for label, run in runs.items():
                figures[label].append(rate(run, len(pieces)))
        print(f"\n{name}: {len(pieces)} texts, {per_text:.1f} tokens each on average; median of {args.rounds} rounds (min-max)")
        base = statistics.median(figures["float32, one per pass"])
        for label, values in figures.items():
            value = statistics.median(values)
            print(f"  {label:24s} {value:8.1f} texts/s ({min(values):.1f}-{max(values):.1f}) {value * per_text:7.0f} tokens/s"
                  f"  {value / base:5.2f}x one per pass")
    print(f"\nend: {uptime()}")


if __name__ == "__main__":
    main()
