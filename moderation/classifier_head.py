"""The moderation classifier's head and the scores both training rounds choose by.

Shared by ``moderation.training`` (the frozen-embedding classifier, the command) and ``moderation.finetune``
(its LoRA round), which the command calls, so neither imports the other's internals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# Embeddings of the training texts, kept between runs (keyed by texts, chunking and encoder).
CACHE_DIR = Path(__file__).resolve().parent.parent / "var" / "moderation-training"


class Classifier(torch.nn.Module):
    """One hidden layer over the embedding (``hidden`` 0: a linear layer, one logistic regression per category)."""

    def __init__(self, width: int, outputs: int, hidden: int, dropout: float) -> None:
        super().__init__()
        if hidden:
            self.layers = torch.nn.Sequential(
                torch.nn.Dropout(dropout), torch.nn.Linear(width, hidden), torch.nn.GELU(),
                torch.nn.Dropout(dropout), torch.nn.Linear(hidden, outputs),
            )
        else:
            self.layers = torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(width, outputs))

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.layers(vectors)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve (step-wise, as scikit-learn's ``average_precision_score``)."""
    positives = labels.sum()
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = labels[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / positives)


def best_threshold(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float]:
    """(threshold, F1) with the best F1 of ``scores >= threshold``, each row counted with its weight."""
    weights = np.ones_like(scores) if weights is None else weights
    order = np.argsort(-scores, kind="stable")
    ranked, hits, counted = scores[order], labels[order], weights[order]
    true_positives = np.cumsum(hits * counted)
    predicted = np.cumsum(counted)
    f1 = 2 * true_positives / (predicted + (hits * counted).sum())
    # Only cut between distinct scores.
    last_of_value = np.r_[ranked[1:] != ranked[:-1], True]
    f1 = np.where(last_of_value, f1, -1)
    best = int(np.argmax(f1))
    below = ranked[best + 1] if best + 1 < len(ranked) else ranked[best] - 1e-3
    return float((ranked[best] + below) / 2), float(f1[best])
