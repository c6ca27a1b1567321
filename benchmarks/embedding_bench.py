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
    parser.add_argument("--texts", type=int, default=256, help="texts per workload")
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
        figures = {
            "served, C=16": rate(lambda: concurrent(model, pieces, 16), len(pieces)),
            "served, C=1": rate(lambda: concurrent(model, pieces, 1), len(pieces)),
            "float32, one per pass": rate(lambda: [encoder.embed_ids([p]) for p in pieces], len(pieces)),
            "int8, one per pass": rate(lambda: [encoder.encode_ids([p]) for p in pieces], len(pieces)),
            "moderation check": rate(lambda: detect_many([text + " " for text in texts]), len(pieces)),
        }
        print(f"\n{name}: {len(pieces)} texts, {per_text:.1f} tokens each on average")
        base = figures["float32, one per pass"]
        for label, value in figures.items():
            print(f"  {label:24s} {value:8.1f} texts/s {value * per_text:9.0f} tokens/s  ({value / base:.2f}x one per pass)")
    print(f"\nend: {uptime()}")


if __name__ == "__main__":
    main()
