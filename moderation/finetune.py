"""Fine-tune the encoder for moderation with a LoRA adapter (peft): ``python -m moderation.training --finetune``.

Starts from the frozen-embedding classifier (``moderation.training``, step 1-2) and trains, together, a
LoRA adapter (rank ``--lora-rank``) on the query, key and value projections of all six layers and the
classifier, on each training row's first piece (float32, mean pooled and L2 normalised as served), rows
drawn by the same per-source weights. The development score (mean average precision over the head
categories, float32) is printed after each round of ``--round-steps`` steps, and the best round's adapter is
kept in ``var/moderation-training/`` as it goes, so a stopped run still leaves a usable adapter. At the end
the adapter is merged into the weights the way the detector serves them (int8, traced), the development
rows are read again through that encoder, and the thresholds and the development report come from there.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch

from moderation import training_data
from moderation.classifier_head import CACHE_DIR, Classifier, average_precision


def _first_piece_ids(rows) -> list[list[int]]:
    from moderation.detectors import chunks

    found = []
    for row in rows:
        pieces = chunks(row.text)
        found.append(list(pieces[0].ids) if pieces else [])
    return found


def _batch(ids_list: list[list[int]], cls: int, sep: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(ids) for ids in ids_list) + 2
    ids = torch.zeros((len(ids_list), length), dtype=torch.long)
    mask = torch.zeros((len(ids_list), length), dtype=torch.long)
    for row, piece in enumerate(ids_list):
        ids[row, : len(piece) + 2] = torch.tensor([cls, *piece, sep])
        mask[row, : len(piece) + 2] = 1
    return ids, mask


def _embed(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)


def adapter_arrays(peft_model, scale: float) -> dict[str, np.ndarray]:
    """The LoRA matrices by the base model's module names (what ``moderation.encoder.merge_adapter`` reads)."""
    arrays = {"scale": np.array(scale, dtype=np.float32)}
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            base = name.split("base_model.model.", 1)[-1]
            arrays[f"{base}.lora_A"] = module.lora_A["default"].weight.detach().numpy().astype(np.float32)
            arrays[f"{base}.lora_B"] = module.lora_B["default"].weight.detach().numpy().astype(np.float32)
    return arrays


def finetune(args, rows, categories, head: Classifier, source_weight: dict[str, float], positive_weight: torch.Tensor):
    """Returns (adapter arrays, fine-tuned classifier, history)."""
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm
    from transformers import AutoModel

    from moderation.encoder import encoder_dir, token_counter

    torch.manual_seed(args.seed)
    counter = token_counter()
    cls, sep = counter.token_to_id("[CLS]"), counter.token_to_id("[SEP]")
    base = AutoModel.from_pretrained(encoder_dir())
    config = LoraConfig(r=args.lora_rank, lora_alpha=2 * args.lora_rank, lora_dropout=0.05,
                        target_modules=["query", "key", "value"])
    model = get_peft_model(base, config)
    scale = config.lora_alpha / config.r

    train_rows = [row for row in rows if not row.dev]
    dev_rows = [row for row in rows if row.dev]
    rng = np.random.default_rng(args.seed)
    dev_sample = sorted(rng.choice(len(dev_rows), size=min(args.dev_sample, len(dev_rows)), replace=False))
    dev_rows_sample = [dev_rows[i] for i in dev_sample]
    train_ids = _first_piece_ids(train_rows)
    dev_ids = _first_piece_ids(dev_rows_sample)
    keep = [i for i, ids in enumerate(train_ids) if ids]
    probabilities = np.array([source_weight[train_rows[i].source] for i in keep])
    probabilities /= probabilities.sum()
    targets = torch.tensor([train_rows[i].targets for i in keep], dtype=torch.float32)
    dev_targets = np.array([row.targets for row in dev_rows_sample])

    parameters = [
        {"params": [p for p in model.parameters() if p.requires_grad], "lr": args.lora_lr},
        {"params": head.parameters(), "lr": args.lora_lr / 3},
    ]
    optimiser = torch.optim.AdamW(parameters, weight_decay=0.01)
    total_steps = args.rounds * args.round_steps
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: min(1.0, (step + 1) / 50) * max(0.05, 1 - step / total_steps))

    def dev_score() -> float:
        model.eval()
        head.eval()
        logits = []
        with torch.no_grad():
            for start in range(0, len(dev_ids), 64):
                part = [ids or [sep] for ids in dev_ids[start : start + 64]]
                logits.append(head(_embed(model, *_batch(part, cls, sep))).numpy())
        logits = np.concatenate(logits)
        aps = []
        for column in range(len(categories)):
            mask = dev_targets[:, column] >= 0
            labels = (dev_targets[mask, column] == 1).astype(float)
            if 0 < labels.sum() < len(labels):
                aps.append(average_precision(logits[mask, column], labels))
        return float(np.mean(aps))

    history = [{"round": 0, "dev_mean_ap_fp32": round(dev_score(), 4)}]
    print(f"round 0 (frozen encoder)  dev mean AP (float32, {len(dev_ids)} rows) {history[0]['dev_mean_ap_fp32']:.4f}", flush=True)
    best = (history[0]["dev_mean_ap_fp32"], 0, adapter_arrays(model, scale), {k: v.clone() for k, v in head.state_dict().items()})
    started = time.time()
    for round_number in range(1, args.rounds + 1):
        model.train()
        head.train()
        total = 0.0
        for _ in tqdm(range(args.round_steps), desc=f"round {round_number}", mininterval=10, file=sys.stdout):
            chosen = rng.choice(len(keep), size=args.lora_batch, p=probabilities)
            ids, mask = _batch([train_ids[keep[i]] for i in chosen], cls, sep)
            y = targets[chosen]
            known = (y >= 0).float()
            logits = head(_embed(model, ids, mask))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.clamp(min=0), reduction="none", pos_weight=positive_weight)
            loss = (loss * known).sum() / known.sum().clamp(min=1)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach())
        score = dev_score()
        history.append({"round": round_number, "loss": round(total / args.round_steps, 5), "dev_mean_ap_fp32": round(score, 4),
                        "minutes": round((time.time() - started) / 60, 1)})
        print(f"round {round_number}  loss {total / args.round_steps:.4f}  dev mean AP (float32) {score:.4f}", flush=True)
        if score > best[0]:
            best = (score, round_number, adapter_arrays(model, scale), {k: v.clone() for k, v in head.state_dict().items()})
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            np.savez(CACHE_DIR / "finetune-best.npz", **best[2], **{f"head.{k}": v.numpy() for k, v in best[3].items()})
        if args.stop_after and time.time() - started > args.stop_after * 60:
            print(f"stopping after {round_number} rounds (--stop-after {args.stop_after} min)", flush=True)
            break
    head.load_state_dict(best[3])
    head.eval()
    return best[2], head, history, best[1]


def rounds_for(minutes: float, rate: float, batch: int, round_steps: int) -> int:
    return max(1, math.floor(minutes * 60 * rate / batch / round_steps))
