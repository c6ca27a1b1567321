"""Classification-style tasks (sentiment, extractive QA) answered by the one causal LM the engine holds.

No second model is loaded: each task turns its question into prompts and reads the LM's own
probabilities (of a label word, of a span of the context). These helpers are the shared machinery:
a prompt prefix that many items share is run once and its key/value cache reused for every item.

Everything here is a pure function of (model, tokenizer, inputs): no Django, no global state other
than a per-model memo of prefix caches, deterministic under ``torch.inference_mode``.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache

# Documents in SmolLM2's pre-training data are separated by this token; starting a plain-text prompt
# with it puts the model in "start of a fresh document" state instead of mid-sentence.
DOCUMENT_START = "<|endoftext|>"

_prefix_memo: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()
_memo_lock = threading.Lock()
_MEMO_LIMIT = 32


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_before(tokenizer, text: str, follower: str) -> list[int]:
    """The tokens of ``text`` as they come out when ``follower`` comes next.

    Prompts are cut into a cached prefix and per-item suffixes, and the cut must not change the
    tokens: SmolLM2's tokenizer gives a trailing ``"\\n\\n"`` as one token but ``"\\n\\nReview"`` as
    ``"\\n", "\\n", "Review"``, the form the model saw in training. So the prefix is tokenized together
    with what follows it and cut at the boundary.
    """
    encoded = tokenizer(text + follower, add_special_tokens=False, return_offsets_mapping=True)
    ids = []
    for token, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
        if end <= len(text):
            ids.append(token)
        elif start < len(text):
            raise ValueError(f"a token straddles the end of {text[-20:]!r}; cut the prompt elsewhere")
    return ids


@dataclass(frozen=True)
class Prefix:
    """The key/value cache of a prompt prefix (batch 1) and its next-token logits."""

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    last_logits: torch.Tensor
    length: int

    def cache_for(self, batch: int) -> DynamicCache:
        # expand() is a view: the batch shares the prefix's memory until the cache grows.
        return DynamicCache(
            ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in self.layers]
        )


@torch.inference_mode()
def compute_prefix(model, ids: list[int], *, base: Prefix | None = None) -> Prefix:
    """Run ``ids`` (after ``base``, when given) once and keep the cache."""
    if not ids:
        raise ValueError("a prefix needs at least one token")
    start = base.length if base else 0
    x = torch.tensor([ids], device=model.device)
    out = model(
        x,
        past_key_values=base.cache_for(1) if base else None,
        position_ids=torch.arange(start, start + len(ids), device=model.device).unsqueeze(0),
        use_cache=True,
    )
    layers = tuple((layer.keys, layer.values) for layer in out.past_key_values.layers)
    return Prefix(layers=layers, last_logits=out.logits[0, -1].float(), length=start + len(ids))


def shared_prefix(model, ids: list[int]) -> Prefix:
    """``compute_prefix`` memoized per model, for fixed instruction/demonstration prefixes."""
    key = tuple(ids)
    with _memo_lock:
        memo = _prefix_memo.setdefault(model, {})
        found = memo.get(key)
    if found is not None:
        return found
    prefix = compute_prefix(model, ids)
    with _memo_lock:
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()
        memo[key] = prefix
    return prefix


@torch.inference_mode()
def next_token_logprobs(model, prefix: Prefix, suffixes: list[list[int]], *, batch_size: int = 32) -> torch.Tensor:
    """Log-probabilities of the token that follows ``prefix + suffix``, one row per suffix.

    Suffixes are right-padded: with a causal model a real token never attends to the padding after it,
    so no attention mask is needed, and only the last real position goes through the LM head.
    """
    rows = []
    for first in range(0, len(suffixes), batch_size):
        chunk = suffixes[first : first + batch_size]
        width = max(len(ids) for ids in chunk)
        x = torch.zeros(len(chunk), width, dtype=torch.long)
        for row, ids in enumerate(chunk):
            x[row, : len(ids)] = torch.tensor(ids)
        positions = torch.arange(prefix.length, prefix.length + width).unsqueeze(0).expand(len(chunk), -1)
        hidden = model.model(
            x.to(model.device),
            past_key_values=prefix.cache_for(len(chunk)),
            position_ids=positions.to(model.device),
            use_cache=True,
        ).last_hidden_state
        last = torch.tensor([len(ids) - 1 for ids in chunk], device=model.device)
        logits = model.lm_head(hidden[torch.arange(len(chunk), device=model.device), last])
        rows.append(torch.log_softmax(logits.float(), dim=-1).cpu())
    return torch.cat(rows)
