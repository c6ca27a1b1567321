"""Score chunking settings on long texts made from development data only (how ``CHUNK_TOKENS``,
``MAX_CHUNKS`` and ``CHUNK_PENALTY`` in ``moderation/detectors.py`` were chosen).

    .venv/bin/python moderation/data/joined_dev.py 126,3,0 32,8,0 32,8,1   # CHUNK_TOKENS,MAX_CHUNKS,PENALTY

300 texts: 150 joins of 3 to 9 harmless texts from ``dev_handwritten.jsonl`` and 150 such joins with one
harmful text from the same file inserted at a random place (seed 0). Printed per setting: precision and
recall of "flagged" against "has the harmful text inserted", how many harmless joins were flagged, recall
per label of the inserted text, and CPU milliseconds per call. These joins are not real long texts (their
parts do not belong together), so they say more about recall than about false alarms.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.moderation_eval import LABELS  # noqa: E402  (the moderation data set's label -> category)


def joined_texts(path: Path = Path(__file__).with_name("dev_handwritten.jsonl")) -> list[tuple[str, dict | None]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    harmless = [row["prompt"] for row in rows if not any(row.get(label) == 1 for label in LABELS)]
    harmful = [row for row in rows if any(row.get(label) == 1 for label in LABELS)]
    rng = random.Random(0)
    cases: list[tuple[str, dict | None]] = []
    for _ in range(150):
        cases.append((" ".join(rng.choice(harmless) for _ in range(rng.randint(3, 9))), None))
    for i in range(150):
        parts = [rng.choice(harmless) for _ in range(rng.randint(3, 9))]
        parts.insert(rng.randint(0, len(parts)), harmful[i % len(harmful)]["prompt"])
        cases.append((" ".join(parts), harmful[i % len(harmful)]))
    return cases


def main(settings: list[str]) -> int:
    import torch

    from moderation import detectors

    torch.set_num_threads(1)
    cases = joined_texts()
    for setting in settings:
        tokens, chunks, penalty = setting.split(",")
        detectors.CHUNK_TOKENS, detectors.MAX_CHUNKS, detectors.CHUNK_PENALTY = int(tokens), int(chunks), float(penalty)
        detectors.detect(cases[0][0])
        true_positives = false_positives = 0
        caught: dict[str, list[bool]] = {}
        started = time.process_time()
        for text, row in cases:
            flagged = {c for c, s in detectors.detect(text).scores.items() if s >= detectors.DEFAULT_THRESHOLD}
            if row is None:
                false_positives += bool(flagged)
                continue
            true_positives += bool(flagged)
            for label, category in LABELS.items():
                if row.get(label) == 1:
                    caught.setdefault(label, []).append(category in flagged)
        cpu_ms = (time.process_time() - started) * 1000 / len(cases)
        precision = true_positives / max(1, true_positives + false_positives)
        recall = true_positives / 150
        per_label = " ".join(f"{label} {sum(v) / len(v):.2f}" for label, v in caught.items())
        print(
            f"chunk tokens {tokens}, chunks {chunks}, penalty {penalty}: precision {precision:.3f} recall {recall:.3f} "
            f"harmless flagged {false_positives}/150; recall per label {per_label}; CPU ms {cpu_ms:.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:] or ["32,8,1"]))
