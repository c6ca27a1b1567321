"""Train the extractive QA reader: ``nice -n 10 python -m inference.training.qa``.

SQuAD v1.1 train (the reconstruction in ../shared/data/train/squad_v1.1_train; its ``answer_start`` is the
answer's first occurrence for most questions, wrong for ~0.6 %), split by article into train and
development articles. A seeded sample of the train questions, read as windows of the encoder (windows
without the answer learn the [CLS] no-answer target), trains a LoRA adapter and a start/end head. The dev
score (SQuAD F1 / exact match) is printed after every epoch; the no-answer threshold is chosen at the end on
the dev articles: genuine pairs, and the same questions against another dev article's context.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import random
import re
import string
import time
from pathlib import Path

import torch
from tqdm import tqdm

from inference.encoder import TRAINED_DIR, load_tokenizer
from inference.tasks import qa as reader
from inference.training.common import (
    autocast,
    data_entry,
    lora_model,
    optimizer_and_schedule,
    planned_steps,
    save,
    seed_everything,
)
from moderation.training_data import DATA_DIR

DEFAULT_DATA = DATA_DIR / "squad_v1.1_train/train-v1.1.reconstructed.json.gz"  # ../shared/data/train, or SLUICE_TRAIN_DATA


def load_articles(path: Path) -> list[list[dict]]:
    """One list of {question, context, start, text} per article."""
    articles = []
    for article in json.load(gzip.open(path))["data"]:
        items = []
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answer = qa["answers"][0]
                items.append({"question": qa["question"].strip(), "context": paragraph["context"],
                              "start": answer["answer_start"], "text": answer["text"]})
        articles.append(items)
    return articles


def split_articles(count: int, *, seed: int, dev_articles: int) -> tuple[list[int], list[int]]:
    """(train, dev) article indices: a seeded random set of whole articles is the development split."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return sorted(order[dev_articles:]), sorted(order[:dev_articles])


def dev_sample(dev_items: list[dict], *, seed: int, questions: int) -> list[dict]:
    return random.Random(seed + 1).sample(dev_items, min(questions, len(dev_items)))


def _normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def f1(prediction: str | None, gold: list[str]) -> float:
    best = 0.0
    for answer in gold:
        p, g = _normalize(prediction or "").split(), _normalize(answer).split()
        common = sum((collections.Counter(p) & collections.Counter(g)).values())
        if common:
            precision, recall = common / len(p), common / len(g)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def exact(prediction: str | None, gold: list[str]) -> float:
    return float(any(_normalize(prediction or "") == _normalize(a) for a in gold))


def labelled_windows(tokenizer, items: list[dict], *, length: int, stride: int) -> list[tuple[reader.Window, int, int]]:
    """Each item's windows with the answer's start/end token, or (0, 0) — [CLS] — where it is not inside."""
    found = []
    for window in reader.windows(tokenizer, [(i["question"], i["context"]) for i in items], length=length, stride=stride):
        item = items[window.item]
        a_start, a_end = item["start"], item["start"] + len(item["text"])
        s = e = 0
        inside = [k for k, span in enumerate(window.offsets) if span is not None]
        if inside and window.offsets[inside[0]][0] <= a_start and window.offsets[inside[-1]][1] >= a_end:
            s = next(k for k in inside if window.offsets[k][1] > a_start)
            e = next(k for k in reversed(inside) if window.offsets[k][0] < a_end)
        found.append((window, s, e))
    return found


@torch.inference_mode()
def predict(model, tokenizer, pairs, *, length, stride, max_answer_tokens, batch_size=32) -> list[reader.Reading]:
    model.eval()
    all_windows = reader.windows(tokenizer, pairs, length=length, stride=stride)
    logits = []
    for first in range(0, len(all_windows), batch_size):
        chunk = all_windows[first : first + batch_size]
        out = model(**reader.batch(chunk)).float()
        logits.extend(out[row, : len(w.ids)] for row, w in enumerate(chunk))
    return reader.read(all_windows, logits, len(pairs), max_answer_tokens=max_answer_tokens)


def score(readings, items, *, threshold=float("inf")) -> dict:
    answers = [None if r.start is None or r.null_margin > threshold else item["context"][r.start : r.end]
               for r, item in zip(readings, items)]
    return {"f1": 100 * sum(f1(a, [i["text"]]) for a, i in zip(answers, items)) / len(items),
            "exact": 100 * sum(exact(a, [i["text"]]) for a, i in zip(answers, items)) / len(items),
            "null_rate": sum(a is None for a in answers) / len(items)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=TRAINED_DIR / "qa")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--questions", type=int, default=5000, help="train questions sampled (0: all)")
    parser.add_argument("--dev-articles", type=int, default=24)
    parser.add_argument("--dev-questions", type=int, default=150, help="dev questions scored each epoch (and for the threshold)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=int, default=32)
    parser.add_argument("--window", type=int, default=160)
    parser.add_argument("--stride", type=int, default=48, help="context tokens shared by neighbouring windows")
    # Off by default: the shipped reader was trained without them, and the defaults rebuild it.
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=False,
                        help="bfloat16 autocast in training's forward pass (dev scoring stays float32)")
    parser.add_argument("--by-length", action=argparse.BooleanOptionalAction, default=False,
                        help="batches of windows of about the same length (less padding), in a random order")
    parser.add_argument("--max-answer-tokens", type=int, default=30)
    parser.add_argument("--checkpoint-minutes", type=float, default=8.0)
    parser.add_argument("--minutes", type=float, default=0.0,
                        help="stop training after this many minutes (0: no limit); the manifest records the steps")
    parser.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    tokenizer = load_tokenizer()
    articles = load_articles(args.data)
    train_ids, dev_ids = split_articles(len(articles), seed=args.seed, dev_articles=args.dev_articles)
    train_items = [item for a in train_ids for item in articles[a]]
    dev_items = [item for a in dev_ids for item in articles[a]]
    train_items = random.Random(args.seed).sample(train_items, min(args.questions or len(train_items), len(train_items)))
    dev_eval = dev_sample(dev_items, seed=args.seed, questions=args.dev_questions)
    print(f"{len(train_ids)} train articles ({len(train_items)} questions sampled), {len(dev_ids)} dev articles "
          f"({len(dev_items)} questions, {len(dev_eval)} scored per epoch)", flush=True)

    features = labelled_windows(tokenizer, train_items, length=args.window, stride=args.stride)
    print(f"{len(features)} train windows, {sum(s == 0 for _, s, _ in features)} without the answer", flush=True)
    model = lora_model(2, pool=False, rank=args.rank, alpha=args.alpha, dropout=0.0)
    model.print_trainable_parameters()
    total = planned_steps(len(features), batch=args.batch, epochs=args.epochs, max_steps=args.max_steps)
    optimizer, schedule = optimizer_and_schedule(model, lr=args.lr)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out", "data")}
    manifest = {"task": "qa", "command": "python -m inference.training.qa", "data": [data_entry(args.data)],
                "split": {"dev_articles": len(dev_ids), "dev_questions": len(dev_items), "train_articles": len(train_ids),
                          "train_questions_sampled": len(train_items), "train_windows": len(features)},
                "settings": settings, "epochs": [], "checkpoints": [], "threshold": None, "steps": 0,
                "planned_steps": total}
    step, last_checkpoint, started = 0, time.monotonic(), time.monotonic()
    out_of_time = lambda: bool(args.minutes) and time.monotonic() - started > args.minutes * 60  # noqa: E731
    order_rng = random.Random(args.seed + 2)

    def evaluate(items) -> dict:
        readings = predict(model, tokenizer, [(i["question"], i["context"]) for i in items], length=args.window,
                           stride=args.stride, max_answer_tokens=args.max_answer_tokens)
        return score(readings, items)

    def checkpoint(questions: int) -> None:
        """Save what there is, with a no-answer threshold of its own, so that any checkpoint serves."""
        found = evaluate(dev_eval[:questions])
        manifest["checkpoints"].append({"steps": step, "dev": found, "questions": questions,
                                        "minutes": round((time.monotonic() - started) / 60, 1)})
        print(f"step {step}: dev F1 {found['f1']:.1f}, exact {found['exact']:.1f} ({questions} questions)", flush=True)
        manifest["threshold"] = choose_threshold(model, tokenizer, dev_items, args, questions=questions)
        manifest["steps"] = step
        save(model, args.out, manifest)
        model.train()

    for epoch in range(args.epochs):
        model.train()
        indices = list(range(len(features)))
        order_rng.shuffle(indices)
        if args.by_length:
            by_length = []
            for first in range(0, len(indices), 50 * args.batch):
                by_length.extend(sorted(indices[first : first + 50 * args.batch], key=lambda i: len(features[i][0].ids)))
            indices = by_length
        batches = [indices[first : first + args.batch] for first in range(0, len(indices), args.batch)]
        if args.by_length:
            order_rng.shuffle(batches)
        bar = tqdm(batches, desc=f"qa epoch {epoch + 1}/{args.epochs}", mininterval=10)
        running = None
        for batch_indices in bar:
            if (args.max_steps and step >= args.max_steps) or out_of_time():
                break
            chunk = [features[i] for i in batch_indices]
            inputs = reader.batch([w for w, _, _ in chunk])
            with autocast(args.bf16):
                logits = model(**inputs)
            logits = logits.float().masked_fill(inputs["attention_mask"].unsqueeze(-1) == 0, -1e4)
            starts = torch.tensor([s for _, s, _ in chunk])
            ends = torch.tensor([e for _, _, e in chunk])
            loss = (torch.nn.functional.cross_entropy(logits[..., 0], starts)
                    + torch.nn.functional.cross_entropy(logits[..., 1], ends)) / 2
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            value = loss.item()
            running = value if running is None else 0.98 * running + 0.02 * value
            bar.set_postfix(loss=f"{running:.3f}", step=step, refresh=False)
            if time.monotonic() - last_checkpoint > args.checkpoint_minutes * 60:
                checkpoint(60)
                last_checkpoint = time.monotonic()
        found = evaluate(dev_eval)
        manifest["epochs"].append({"epoch": epoch + 1, "steps": step, "dev": found,
                                   "minutes": round((time.monotonic() - started) / 60, 1)})
        print(f"epoch {epoch + 1}: dev F1 {found['f1']:.1f}, exact {found['exact']:.1f} ({len(dev_eval)} questions)", flush=True)
        if (args.max_steps and step >= args.max_steps) or out_of_time():
            break

    if step < total:  # stopped by --minutes: the same artefact again is --max-steps <step>
        manifest["stopped_early"] = {"steps": step, "reproduce": f"python -m inference.training.qa --max-steps {step}"}
    manifest["steps"] = step
    manifest["threshold"] = choose_threshold(model, tokenizer, dev_items, args, questions=args.dev_questions)
    save(model, args.out, manifest)
    print(f"wrote {args.out}", flush=True)


def choose_threshold(model, tokenizer, dev_items, args, *, questions: int) -> dict:
    """The no-answer rule on the dev articles: the lowest null margin threshold that keeps dev F1 within
    0.5 of never abstaining, and how often it then abstains for a question asked of the wrong context."""
    rng = random.Random(args.seed + 3)
    sample = rng.sample(dev_items, min(questions, len(dev_items)))
    contexts = sorted({i["context"] for i in dev_items})
    wrong = [(i["question"], rng.choice([c for c in contexts if c != i["context"]])) for i in sample]
    options = dict(length=args.window, stride=args.stride, max_answer_tokens=args.max_answer_tokens)
    genuine = predict(model, tokenizer, [(i["question"], i["context"]) for i in sample], **options)
    mismatched = predict(model, tokenizer, wrong, **options)
    ceiling = score(genuine, sample)["f1"]
    candidates = sorted({round(r.null_margin, 3) for r in genuine + mismatched})
    chosen = float("inf")
    for candidate in candidates:
        if score(genuine, sample, threshold=candidate)["f1"] >= ceiling - 0.5:
            chosen = candidate
            break
    result = {"null_margin_above": chosen, "dev_f1_never_null": ceiling,
              "dev_f1": score(genuine, sample, threshold=chosen)["f1"],
              "dev_null_rate_genuine": score(genuine, sample, threshold=chosen)["null_rate"],
              "dev_null_rate_wrong_context": sum(r.null_margin > chosen for r in mismatched) / len(mismatched),
              "questions": len(sample)}
    print(f"no-answer threshold {chosen}: dev F1 {result['dev_f1']:.1f} (never abstaining {ceiling:.1f}), "
          f"abstains on {100 * result['dev_null_rate_wrong_context']:.0f} % of wrong-context questions", flush=True)
    return result


if __name__ == "__main__":
    main()
