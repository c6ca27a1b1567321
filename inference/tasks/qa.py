"""Extractive QA with the trained reader: the context is read in overlapping windows (question + a slice of
the context, the encoder's window long), the reader scores each context token as a start and an end, and the
best span over all windows is the answer, unless the no-answer score (the [CLS] token's start + end) beats
it by more than the manifest's threshold. Answers are always ``context[start:end]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_QUESTION_TOKENS = 64


@dataclass(frozen=True)
class Window:
    item: int  # which (question, context) pair
    ids: list[int]
    types: list[int]
    offsets: list[tuple[int, int] | None]  # character span in the context of each token, None outside it


def windows(tokenizer, pairs: list[tuple[str, str]], *, length: int, stride: int) -> list[Window]:
    """Every pair as overlapping windows of at most ``length`` tokens, ``stride`` context tokens shared
    between neighbours."""
    questions = [tokenizer.convert_tokens_to_string(tokenizer.tokenize(q)[:MAX_QUESTION_TOKENS]) for q, _ in pairs]
    encoded = tokenizer(questions, [context for _, context in pairs], truncation="only_second", max_length=length,
                        stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    found = []
    for row, item in enumerate(encoded["overflow_to_sample_mapping"]):
        sequence = encoded.sequence_ids(row)
        offsets = [tuple(span) if part == 1 else None for span, part in zip(encoded["offset_mapping"][row], sequence)]
        found.append(Window(item=item, ids=encoded["input_ids"][row], types=encoded["token_type_ids"][row],
                            offsets=offsets))
    return found


def batch(windows_: list[Window]) -> dict[str, torch.Tensor]:
    width = max(len(w.ids) for w in windows_)
    ids = torch.zeros(len(windows_), width, dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for row, window in enumerate(windows_):
        ids[row, : len(window.ids)] = torch.tensor(window.ids)
        types[row, : len(window.ids)] = torch.tensor(window.types)
        mask[row, : len(window.ids)] = 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


@dataclass(frozen=True)
class Reading:
    start: int | None  # characters in the context; None: no span found
    end: int | None
    span_score: float  # the best span's start + end logits
    null_margin: float  # min over windows of (no-answer score - best span score in that window)


def best_span(window: Window, logits: torch.Tensor, *, max_answer_tokens: int) -> tuple[float, int, int, float]:
    """(span score, char start, char end, no-answer score) of one window; ``logits`` is (tokens, 2)."""
    context = [i for i, span in enumerate(window.offsets) if span is not None]
    null = float(logits[0, 0] + logits[0, 1])
    if not context:
        return float("-inf"), 0, 0, null
    first, last = context[0], context[-1]
    starts = logits[first : last + 1, 0]
    ends = logits[first : last + 1, 1]
    scores = starts[:, None] + ends[None, :]
    n = scores.shape[0]
    allowed = torch.ones(n, n, dtype=torch.bool).triu().tril(max_answer_tokens - 1)
    scores = scores.masked_fill(~allowed, float("-inf"))
    flat = int(torch.argmax(scores))
    s, e = divmod(flat, n)
    return float(scores[s, e]), window.offsets[first + s][0], window.offsets[first + e][1], null


def read(windows_: list[Window], logits: list[torch.Tensor], items: int, *, max_answer_tokens: int) -> list[Reading]:
    best: list[tuple[float, int | None, int | None]] = [(float("-inf"), None, None)] * items
    margins = [float("inf")] * items
    for window, window_logits in zip(windows_, logits):
        score, start, end, null = best_span(window, window_logits, max_answer_tokens=max_answer_tokens)
        if score > best[window.item][0]:
            best[window.item] = (score, start, end)
        margins[window.item] = min(margins[window.item], null - score)
    return [Reading(start=s, end=e, span_score=score, null_margin=m) for (score, s, e), m in zip(best, margins)]
