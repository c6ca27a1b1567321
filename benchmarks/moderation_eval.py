"""Score ``moderation.detectors.detect`` on OpenAI's public moderation test set.

Run from the repository root:

    .venv/bin/python -m benchmarks.moderation_eval --threads 1       # the test set (1680 texts)
    .venv/bin/python -m benchmarks.moderation_eval --dev --threads 1 # the training data's development split

The test set is ``../shared/data/eval/openai_moderation_1680.jsonl`` (openai/moderation-api-release,
MIT). Nothing in the detector was trained, tuned or calibrated on it: run it to measure, not to choose.
Its labels: S sexual, H hate, V violence, HR harassment, SH self-harm, S3 sexual/minors,
H2 hate/threatening, V2 violence/graphic; a missing label means unknown. A text counts as harmful when
any label is 1, and as harmless otherwise (so a text whose labels are all 0 or missing is harmless).

Printed: precision, recall and F1 of "flagged" (any category's score >= DEFAULT_THRESHOLD) against
"harmful", and beside them the threshold-free AUPRC of "flagged" (average precision of each text's highest
category score); recall per label, where a label counts as caught when the category it maps to is flagged
(the "own" column, the headline) and, for reference, when any category is flagged; milliseconds per
single-text ``detect`` call after warm-up (wall time p50, p95 and mean, and the CPU time it used, which a busy
machine does not inflate as much) with the load average; and the alt-profanity-check alone baseline (its
probability >= 0.3) on the same texts.

``--dev`` scores the development rows of the training data instead (``moderation.training_data``: 20 % of
every source, never trained on; the thresholds were chosen on them, so these figures are optimistic), with
"harmful" = positive for some category in ``moderation/data/label_map.toml``, per source.
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

from moderation.training_data import shared_data  # noqa: E402

EVAL_DIR = shared_data() / "eval"
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


def load_development() -> tuple[list[tuple[str, dict[str, int | None]]], list[str]]:
    """The development rows of the training data, with their sources."""
    from moderation.training_data import load_rows

    rows = [row for row in load_rows() if row.dev]
    return [(row.text, {"harmful": int(1 in row.targets)}) for row in rows], [row.source for row in rows]


def average_precision(scores: list[float], actual: list[bool]) -> float:
    """Area under the precision-recall curve, threshold-free (step-wise, as scikit-learn computes it)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    hits, total = 0, 0.0
    for rank, index in enumerate(order, start=1):
        if actual[index]:
            hits += 1
            total += hits / rank
    return total / max(1, sum(actual))


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
    parser.add_argument("--dev", action="store_true", help="score the training data's development split instead")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads for this run (0: torch's default)"
    )
    parser.add_argument("--limit", type=int, default=0, help="score only the first N texts (0: all)")
    args = parser.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    sources: list[str] = []
    if args.dev:
        path = Path("moderation.training_data (development rows)")
        rows, sources = load_development()
    else:
        path = args.data or EVAL_DIR / "openai_moderation_1680.jsonl"
        rows = load_moderation(path)
    if args.limit:
        rows, sources = rows[: args.limit], sources[: args.limit]
    texts = [text for text, _ in rows]
    harmful = [any(value == 1 for value in labels.values()) for _, labels in rows]
    print(f"data: {path} ({len(rows)} texts, {sum(harmful)} harmful)")

    started = time.perf_counter()
    for _ in range(WARM_UP_CALLS):
        detect("Warm-up call: load the encoder and the classifier.")
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
    auprc = average_precision([max(detection.scores.values()) for detection in detections], harmful)
    print(
        f"\ndetect (threshold {DEFAULT_THRESHOLD}): precision {precision:.3f}  recall {recall:.3f}  F1 {f1:.3f}  "
        f"AUPRC {auprc:.3f} (threshold-free)"
    )
    print(f"  flagged {sum(flagged)} of {len(texts)}")
    if sources:
        print(f"\n  {'source':16} {'texts':>6} {'harmful':>7} {'flagged':>7} {'P':>6} {'R':>6} {'F1':>6}")
        for source in sorted(set(sources)):
            mine = [i for i, s in enumerate(sources) if s == source]
            p, r, f = precision_recall_f1([flagged[i] for i in mine], [harmful[i] for i in mine])
            print(
                f"  {source:16} {len(mine):6} {sum(harmful[i] for i in mine):7} {sum(flagged[i] for i in mine):7} "
                f"{p:6.3f} {r:6.3f} {f:6.3f}"
            )

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
        f"\nms per detect call (single text, after warm-up): p50 {percentile(latencies_ms, 0.5):.1f}  "
        f"p95 {percentile(latencies_ms, 0.95):.1f}  mean {statistics.fmean(latencies_ms):.1f}  max {max(latencies_ms):.1f}  "
        f"(torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the end)"
    )
    # On a shared machine wall time includes waiting for a core; CPU time is what a call costs.
    print(f"CPU ms per detect call (process time, all threads): mean {cpu_ms:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
