"""Score the sentiment and extractive-QA tasks in-process on public test sets, with an ablation.

    python benchmarks/task_eval_offline.py [--limit N] [--data-dir DIR] [--tasks sentiment,qa] [--dev]

SST-2 dev (accuracy) and the first SQuAD v1.1 dev questions (EM/F1 with the official answer
normalization). These files are test sets: nothing in ``inference.tasks`` was fitted to them; this
script only measures. ``--dev`` scores the development sets in ``benchmarks/devdata/`` instead (SST-2
train sentences, SQuAD v1.1 train questions; see its SOURCES.md): variants are compared and chosen on
those, and the test sets are scored once, for the chosen one. Each ablation row switches one technique off (or on) to show what it adds;
rows that need another pass over the data cost another full run (``--ablation quick`` skips them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Development sets (train splits of the same public data): the place to compare variants.
DEV_DIR = ROOT / "benchmarks" / "devdata"
DEV_FILES = {"sentiment": "sst2_train_sentences.tsv", "qa": "squad_train_sample.jsonl"}


# --- SQuAD v1.1 official answer normalization and scores (shared with the HTTP evaluation) ----------

from benchmarks.task_eval import f1_score, normalize_answer  # noqa: E402


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def squad_scores(predictions: list[str | None], rows: list[dict]) -> tuple[float, float]:
    em = f1 = 0.0
    for prediction, row in zip(predictions, rows):
        truths = [answer["text"] for answer in row["answers"]]
        prediction = prediction or ""  # no answer scores 0 against SQuAD v1.1's always-present answers
        em += max(exact_match(prediction, t) for t in truths)
        f1 += max(f1_score(prediction, t) for t in truths)
    return 100 * em / len(rows), 100 * f1 / len(rows)


# --- data -------------------------------------------------------------------------------------------

def load_sst2(path: Path, limit: int | None) -> list[tuple[str, int]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        next(handle)  # header: text\tlabel
        for line in handle:
            text, label = line.rstrip("\n").split("\t")
            rows.append((text.strip(), int(label)))
    return rows[:limit]


def load_squad(path: Path, limit: int | None) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return rows[:limit]


def load_model():
    import torch

    from inference.model_files import load_model_and_tokenizer, packaged_model_source

    cache_dir = Path(os.environ.get("SLUICE_MODEL_CACHE_DIR") or Path(tempfile.gettempdir()) / "sluice-models")
    return load_model_and_tokenizer(packaged_model_source(), dtype=torch.float32, cache_dir=cache_dir)


# --- evaluations ------------------------------------------------------------------------------------

def _p50_latency(call, items: list, samples: int) -> float:
    latencies = []
    for item in items[:samples]:
        started = time.perf_counter()
        call([item])
        latencies.append(time.perf_counter() - started)
    return statistics.median(latencies) if latencies else math.nan


def evaluate_sentiment(model, tokenizer, rows, *, ablation: str, latency_samples: int,
                       name: str = "SST-2 dev") -> None:
    import torch

    from inference.tasks import sentiment

    texts = [text for text, _ in rows]
    gold = torch.tensor([label for _, label in rows])

    def accuracy(probabilities: torch.Tensor) -> float:
        return 100 * (probabilities.argmax(-1) == gold).float().mean().item()

    sentiment.classify_sentiment(model, tokenizer, texts[:2])  # warm the prefix caches and the biases
    started = time.perf_counter()
    members, tokens = sentiment.label_logprobs(model, tokenizer, texts)
    shipped = sentiment.combine(members, sentiment.member_biases(model, tokenizer, sentiment.CALIBRATE))
    elapsed = time.perf_counter() - started
    latency = _p50_latency(lambda batch: sentiment.classify_sentiment(model, tokenizer, batch), texts, latency_samples)

    print(f"{name}: {len(rows)} sentences")
    print(f"  accuracy {accuracy(shipped):.1f}%  (labels {', '.join(sentiment.LABELS)}; "
          f"{sentiment.PROMPTS} prompts x {sentiment.SHOTS} shots, calibration {sentiment.CALIBRATE!r})")
    print(f"  {len(rows) / elapsed:.1f} items/s batched; p50 latency {1000 * latency:.0f} ms for one item alone; "
          f"{statistics.mean(tokens):.0f} prompt tokens per item (shared prefixes included)")

    modes = ("none", "content-free", "in-domain")
    print("  ablation (accuracy %; calibration: " + " / ".join(modes) + "):")
    table = []
    if ablation == "full":
        zero, _ = sentiment.label_logprobs(model, tokenizer, texts, prompts=1, shots=0)
        table.append(("zero-shot", [accuracy(sentiment.combine(zero, sentiment.member_biases(
            model, tokenizer, mode, prompts=1, shots=0))) for mode in modes]))
    biases = {mode: sentiment.member_biases(model, tokenizer, mode) for mode in modes}
    for m in range(members.shape[0]):
        table.append((f"{sentiment.SHOTS}-shot prompt {m + 1} alone", [
            accuracy(sentiment.combine(members[m : m + 1], None if biases[mode] is None else biases[mode][m : m + 1]))
            for mode in modes]))
    table.append((f"ensemble of {members.shape[0]} (mean log-probability)",
                  [accuracy(sentiment.combine(members, biases[mode])) for mode in modes]))
    for name, values in table:
        print(f"    {name:<40} " + " / ".join(f"{v:5.1f}" for v in values))


def evaluate_qa(model, tokenizer, rows, *, ablation: str, latency_samples: int,
                name: str = "SQuAD v1.1 dev, first") -> None:
    from inference.tasks import qa

    pairs = [(row["question"], row["context"]) for row in rows]

    def predictions(found, *, abstain: str) -> list[str | None]:
        out = []
        for (question, context), candidates in zip(pairs, found):
            if candidates is None or candidates.span is None or qa.abstains(candidates, rule=abstain):
                out.append(None)
            else:
                out.append(context[candidates.span[0] : candidates.span[1]])
        return out

    qa.answer_questions(model, tokenizer, pairs[:1])  # warm the prefix cache
    started = time.perf_counter()
    found = qa.search_answers(model, tokenizer, pairs)
    elapsed = time.perf_counter() - started
    shipped = predictions(found, abstain=qa.ABSTAIN_RULE)
    latency = _p50_latency(lambda batch: qa.answer_questions(model, tokenizer, batch), pairs, latency_samples)
    em, f1 = squad_scores(shipped, rows)
    tokens = [c.tokens for c in found if c is not None]

    print(f"{name} {len(rows)} questions")
    print(f"  EM {em:.1f}  F1 {f1:.1f}  (no answer given for {sum(p is None for p in shipped)}; "
          f"focus {qa.FOCUS} sentence(s) chosen among {qa.FOCUS_CANDIDATES}, answer types {qa.ANSWER_TYPES}, "
          f"beam {qa.BEAM_WIDTH}, demonstrations {qa.DEMONSTRATIONS_USED!r}, "
          f"no-answer rule {qa.ABSTAIN_RULE!r})")
    print(f"  {len(rows) / elapsed:.2f} items/s batched; p50 latency {1000 * latency:.0f} ms for one item alone; "
          f"{statistics.mean(tokens):.0f} prompt tokens per item", flush=True)

    print("  ablation (EM / F1; questions left unanswered):")

    def show(name: str, predicted: list[str | None]) -> None:
        em, f1 = squad_scores(predicted, rows)
        print(f"    {name:<62} {em:5.1f} / {f1:5.1f}; {sum(p is None for p in predicted)}", flush=True)

    show("shipped, no-answer rule 'never' (always a span)", predictions(found, abstain="never"))
    show(f"shipped, no-answer rule {qa.ABSTAIN_RULE!r}", shipped)
    if ablation == "full":
        for label, options, rules in (
            ("whole context, no sentence focus", {"focus": None}, ("never", "pmi")),
            ("sentence by shared words only (no likelihood choice)", {"focus_candidates_count": 1}, ("never", "pmi")),
            ("no answer-type constraint", {"answer_types": False}, ("never", "pmi")),
            ("greedy constrained decoding (beam 1)", {"beam_width": 1}, ("never", "pmi")),
            ("no demonstrations (instruction only)", {"demonstrations": "none"}, ("never", "pmi")),
            ("demonstrations incl. an 'unknown' answer", {"demonstrations": "all"}, ("never", "best", "mass")),
        ):
            other = qa.search_answers(model, tokenizer, pairs, **options)
            for rule in rules:
                show(f"{label}, rule {rule!r}", predictions(other, abstain=rule))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N items of each set")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "eval")
    parser.add_argument("--tasks", default="sentiment,qa")
    parser.add_argument("--dev", action="store_true",
                        help="score the development sets in benchmarks/devdata/ instead of the test sets")
    parser.add_argument("--ablation", choices=("quick", "full"), default="full",
                        help="quick: only rows computable from the shipped run")
    parser.add_argument("--latency-samples", type=int, default=10)
    args = parser.parse_args(argv)

    import torch

    torch.manual_seed(0)
    started = time.perf_counter()
    model, tokenizer = load_model()
    print(f"model loaded in {time.perf_counter() - started:.1f} s; torch threads {torch.get_num_threads()}")
    tasks = {task.strip() for task in args.tasks.split(",")}
    if "sentiment" in tasks:
        rows = load_sst2(DEV_DIR / DEV_FILES["sentiment"] if args.dev else args.data_dir / "sst2_dev.tsv", args.limit)
        evaluate_sentiment(model, tokenizer, rows, ablation=args.ablation, latency_samples=args.latency_samples,
                           name="DEVELOPMENT set, SST-2 train sentences" if args.dev else "SST-2 dev")
    if "qa" in tasks:
        rows = load_squad(DEV_DIR / DEV_FILES["qa"] if args.dev else args.data_dir / "squad_dev_300.jsonl", args.limit)
        evaluate_qa(model, tokenizer, rows, ablation=args.ablation, latency_samples=args.latency_samples,
                    name="DEVELOPMENT set, SQuAD v1.1 train sample," if args.dev else "SQuAD v1.1 dev, first")


if __name__ == "__main__":
    main()
