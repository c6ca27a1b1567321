"""Train the sentiment classifier: ``nice -n 10 python -m inference.training.sentiment``.

SST-2 train (../shared/data/train/sst2_train/train.tsv, label first: 1 positive, 0 negative); a seeded
random slice is held out as the development split, a seeded sample of the rest trains a LoRA adapter and a
two-way head over the mean-pooled encoder. Dev accuracy is printed after every epoch.
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm

from inference.encoder import TRAINED_DIR, load_tokenizer
from inference.tasks import sentiment
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

DEFAULT_DATA = DATA_DIR / "sst2_train/train.tsv"  # ../shared/data/train, or SLUICE_TRAIN_DATA
LABELS = ["negative", "positive"]  # SST-2's 0 and 1
LONG_WORDS = 12


def load(path: Path) -> list[tuple[str, int]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(row["sentence"].strip(), int(row["label"])) for row in rows]


def split(rows: list[tuple[str, int]], *, seed: int, dev: int) -> tuple[list, list]:
    """(train, dev): a seeded random slice of ``dev`` phrases is the development split."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[dev:], rows[:dev]


@torch.inference_mode()
def accuracy(model, tokenizer, rows, batch_size=128) -> float:
    model.eval()
    right = 0
    for first in range(0, len(rows), batch_size):
        chunk = rows[first : first + batch_size]
        logits = model(**sentiment.batch(tokenizer, [t for t, _ in chunk]))
        right += int((logits.argmax(-1) == torch.tensor([y for _, y in chunk])).sum())
    return 100 * right / len(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=TRAINED_DIR / "sentiment")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--dev", type=int, default=2000, help="phrases held out as the development split")
    parser.add_argument("--train", type=int, default=0, help="train phrases sampled (0: all)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=int, default=32)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                        help="bfloat16 autocast in training's forward pass (dev scoring stays float32)")
    parser.add_argument("--minutes", type=float, default=0.0,
                        help="stop training after this many minutes (0: no limit); the manifest records the steps")
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--checkpoint-minutes", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    tokenizer = load_tokenizer()
    train, dev = split(load(args.data), seed=args.seed, dev=args.dev)
    if args.train:
        train = train[: args.train]
    # Most SST-2 train rows are short phrases; the sentences a user sends are longer, so the dev report also
    # gives the accuracy on the dev phrases of LONG_WORDS words or more.
    long_dev = [row for row in dev if len(row[0].split()) >= LONG_WORDS]
    print(f"{len(train)} train phrases, {len(dev)} dev phrases ({len(long_dev)} of {LONG_WORDS} words or more)",
          flush=True)
    model = lora_model(len(LABELS), pool=True, rank=args.rank, alpha=args.alpha, dropout=0.0)
    model.print_trainable_parameters()
    total = planned_steps(len(train), batch=args.batch, epochs=args.epochs, max_steps=args.max_steps)
    optimizer, schedule = optimizer_and_schedule(model, lr=args.lr)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "data")}
    manifest = {"task": "sentiment", "command": "python -m inference.training.sentiment", "labels": LABELS,
                "data": [data_entry(args.data)], "split": {"dev": len(dev), "train": len(train), f"dev_{LONG_WORDS}_words_or_more": len(long_dev)},
                "settings": settings, "epochs": [], "checkpoints": [], "steps": 0,
                "planned_steps": total}
    step, started = 0, time.monotonic()
    last_checkpoint = started
    out_of_time = lambda: bool(args.minutes) and time.monotonic() - started > args.minutes * 60  # noqa: E731
    order_rng = random.Random(args.seed + 2)
    for epoch in range(args.epochs):
        model.train()
        # Batches of phrases of about the same length (little padding), in a random order.
        order_rng.shuffle(train)
        by_length = []
        for first in range(0, len(train), 50 * args.batch):
            by_length.extend(sorted(train[first : first + 50 * args.batch], key=lambda row: len(row[0])))
        batches = [by_length[first : first + args.batch] for first in range(0, len(by_length), args.batch)]
        order_rng.shuffle(batches)
        bar = tqdm(batches, desc=f"sentiment epoch {epoch + 1}/{args.epochs}", mininterval=10)
        running = None
        for chunk in bar:
            if (args.max_steps and step >= args.max_steps) or out_of_time():
                break
            with autocast(args.bf16):
                logits = model(**sentiment.batch(tokenizer, [t for t, _ in chunk]))
            loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor([y for _, y in chunk]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            value = loss.item()
            running = value if running is None else 0.98 * running + 0.02 * value
            bar.set_postfix(loss=f"{running:.3f}", step=step, refresh=False)
            if time.monotonic() - last_checkpoint > args.checkpoint_minutes * 60:  # any checkpoint serves
                found = accuracy(model, tokenizer, dev[:500])
                print(f"step {step}: dev accuracy {found:.2f} % (500 phrases)", flush=True)
                manifest["checkpoints"].append({"steps": step, "dev_accuracy": found, "phrases": 500})
                manifest["steps"] = step
                save(model, args.out, manifest)
                model.train()
                last_checkpoint = time.monotonic()
        found = accuracy(model, tokenizer, dev)
        found_long = accuracy(model, tokenizer, long_dev)
        manifest["epochs"].append({"epoch": epoch + 1, "steps": step, "dev_accuracy": found,
                                   f"dev_accuracy_{LONG_WORDS}_words_or_more": found_long,
                                   "minutes": round((time.monotonic() - started) / 60, 1)})
        print(f"epoch {epoch + 1}: dev accuracy {found:.2f} % ({len(dev)} phrases), {found_long:.2f} % on the "
              f"{len(long_dev)} of {LONG_WORDS} words or more", flush=True)
        manifest["steps"] = step
        save(model, args.out, manifest)
        if (args.max_steps and step >= args.max_steps) or out_of_time():
            break
    if step < total:  # stopped by --minutes: the same artefact again is --max-steps <step>
        manifest["stopped_early"] = {"steps": step,
                                     "reproduce": f"python -m inference.training.sentiment --max-steps {step}"}
        save(model, args.out, manifest)
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
