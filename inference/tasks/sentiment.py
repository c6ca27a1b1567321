"""Sentiment with the trained classifier: the encoder's mean-pooled token states through a two-way head,
softmaxed into ``scores`` (summing to 1) over the labels of the manifest."""

from __future__ import annotations

import torch

MAX_TOKENS = 128


def batch(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    return dict(tokenizer(texts, truncation=True, max_length=MAX_TOKENS, padding=True, return_tensors="pt"))


def scores(logits: torch.Tensor, labels: list[str]) -> list[dict[str, float]]:
    probabilities = torch.softmax(logits.float(), dim=-1).tolist()
    return [dict(zip(labels, row)) for row in probabilities]
