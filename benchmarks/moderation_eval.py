"""Score ``moderation.detectors.detect`` on OpenAI's public moderation test set.

Run from the repository root:

    .venv/bin/python -m benchmarks.moderation_eval            # the test set (1680 texts)
    .venv/bin/python -m benchmarks.moderation_eval --dev      # the development set (Davidson tweets)

The test set is ``../shared/data/eval/openai_moderation_1680.jsonl`` (openai/moderation-api-release,
MIT). Nothing in the detector was trained, tuned or calibrated on it: run it to measure, not to choose.
Its labels: S sexual, H hate, V violence, HR harassment, SH self-harm, S3 sexual/minors,
H2 hate/threatening, V2 violence/graphic; a missing label means unknown. A text counts as harmful when
any label is 1, and as harmless otherwise (so a text whose labels are all 0 or missing is harmless).

Printed: precision, recall and F1 of "flagged" (any category's score >= DEFAULT_THRESHOLD) against
"harmful"; recall per label, where a label counts as caught when the category it maps to is flagged
(the "own" column, our choice for the headline) and, for reference, when any category is flagged;
milliseconds per single-text ``detect`` call after warm-up (wall time, mean and p95, and the CPU time it
used, which a busy machine does not inflate as much); and the alt-profanity-check alone baseline (its probability >= 0.3) on the same texts.

``--dev`` scores the same way on the development third of ``offensive_tweets_3000.csv`` (Davidson et al.
2017, label 1 = hate or offensive; the other two thirds train the heads, see
``moderation/data/build_heads.py``), the set the project may use to develop the detector. Its labels are "offensive", not the
moderation categories, and profanity-check was trained on the full Davidson data, so its baseline there is
optimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from moderation.detectors import DEFAULT_THRESHOLD, detect  # noqa: E402

EVAL_DIR = ROOT.parent / "shared" / "data" / "eval"
LABELS: dict[str, str] = {
    "S": "sexual",
    "H": "hate",
    "V": "violence",
    "HR": "harassment",
    "SH": "self-harm",
    "S3": "sexual/minors",
    "H2": "hate/threatening",
    "V2": "violence/graphic",
}
PROFANITY_BASELINE_THRESHOLD = 0.3
WARM_UP_CALLS = 5


def load_moderation(path: Path) -> list[tuple[str, dict[str, int | None]]]:
    rows = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                rows.append((record["prompt"], {label: record.get(label) for label in LABELS}))
    return rows


def load_davidson(path: Path) -> list[tuple[str, dict[str, int | None]]]:
    """The development third of the tweets (the other two thirds train the detector's heads)."""
    from moderation.data.build_heads import davidson_rows, davidson_split

    _, dev = davidson_split(davidson_rows(path))
    return [(text, {"offensive": label}) for text, label in dev]


def precision_recall_f1(predicted: list[bool], actual: list[bool]) -> tuple[float, float, float]:
    true_positives = sum(p and a for p, a in zip(predicted, actual))
    precision = true_positives / max(1, sum(predicted))
    recall = true_positives / max(1, sum(actual))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="a moderation .jsonl (default: the 1680-text test set)")
    parser.add_argument("--dev", action="store_true", help="score the Davidson tweets development set instead")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads for this run (0: torch's default)"
    )
    parser.add_argument("--limit", type=int, default=0, help="score only the first N texts (0: all)")
    args = parser.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.dev:
        path = args.data or EVAL_DIR / "offensive_tweets_3000.csv"
        rows = load_davidson(path)
    else:
        path = args.data or EVAL_DIR / "openai_moderation_1680.jsonl"
        rows = load_moderation(path)
    if args.limit:
        rows = rows[: args.limit]
    texts = [text for text, _ in rows]
    harmful = [any(value == 1 for value in labels.values()) for _, labels in rows]
    print(f"data: {path} ({len(rows)} texts, {sum(harmful)} harmful)")

    started = time.perf_counter()
    for _ in range(WARM_UP_CALLS):
        detect("Warm-up call: load the encoder, the heads and the profanity model.")
    print(f"load + warm-up: {time.perf_counter() - started:.1f} s")

    detections, latencies_ms = [], []
    cpu_started = time.process_time()
    for text in texts:
        started = time.perf_counter()
        detections.append(detect(text))
        latencies_ms.append((time.perf_counter() - started) * 1000)
    cpu_ms = (time.process_time() - cpu_started) * 1000 / max(1, len(texts))

    flagged_sets = [
        {category for category, score in detection.scores.items() if score >= DEFAULT_THRESHOLD}
        for detection in detections
    ]
    flagged = [bool(categories) for categories in flagged_sets]
    precision, recall, f1 = precision_recall_f1(flagged, harmful)
    print(f"\ndetect (threshold {DEFAULT_THRESHOLD}): precision {precision:.3f}  recall {recall:.3f}  F1 {f1:.3f}")
    print(f"  flagged {sum(flagged)} of {len(texts)}")

    from profanity_check import predict_prob

    baseline = [float(p) >= PROFANITY_BASELINE_THRESHOLD for p in predict_prob(texts)]
    precision, recall, f1 = precision_recall_f1(baseline, harmful)
    print(
        f"profanity-check alone (>= {PROFANITY_BASELINE_THRESHOLD}): "
        f"precision {precision:.3f}  recall {recall:.3f}  F1 {f1:.3f}"
    )

    if not args.dev:
        print("\nrecall per label (own: the mapped category is flagged; any: some category is flagged)")
        print(f"  {'label':5} {'category':24} {'n':>4} {'own':>6} {'any':>6} {'baseline':>9}")
        for label, category in LABELS.items():
            positives = [i for i, (_, labels) in enumerate(rows) if labels[label] == 1]
            if not positives:
                continue
            own = sum(category in flagged_sets[i] for i in positives) / len(positives)
            anything = sum(flagged[i] for i in positives) / len(positives)
            base = sum(baseline[i] for i in positives) / len(positives)
            print(f"  {label:5} {category:24} {len(positives):4d} {own:6.3f} {anything:6.3f} {base:9.3f}")

    import torch

    print(
        f"\nms per detect call (single text, after warm-up): mean {statistics.fmean(latencies_ms):.1f}  "
        f"p95 {percentile(latencies_ms, 0.95):.1f}  max {max(latencies_ms):.1f}  "
        f"(torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the end)"
    )
    # On a shared machine wall time includes waiting for a core; CPU time is what a call costs.
    print(f"CPU ms per detect call (process time, all threads): mean {cpu_ms:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
