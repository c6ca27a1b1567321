"""Log-probabilities of sampled tokens, computed in the scheduler's sampling step for the rows that asked.

One batched log_softmax over just those rows (the others pay nothing). The distribution reported is the one
the token was chosen from before temperature and top-p/top-k: the model's logits after the step's own
constraints (min_tokens holding back end-of-sequence, a grammar's mask). So at temperature 0 the chosen token
is always the most likely one reported. Tokens a constraint ruled out have probability zero; they are reported
as -9999.0, as OpenAI does for "as good as impossible", since JSON has no -infinity.
"""

from __future__ import annotations

import torch

from inference.logprob_entries import TokenLogprob

MAX_TOP_LOGPROBS = 20  # OpenAI's bound for chat; legacy completions allow 5
MAX_COMPLETION_LOGPROBS = 5
IMPOSSIBLE = -9999.0


def _finite(value: float) -> float:
    return value if value > IMPOSSIBLE else IMPOSSIBLE


def logprobs_compute(logits: torch.Tensor, rows: list[int], chosen: list[int], tops: list[int]) -> list[TokenLogprob]:
    """For each row of ``rows`` (indices into ``logits`` [n, vocab]): the chosen token's log-probability and its
    ``tops[i]`` most likely alternatives."""
    index = torch.tensor(rows, dtype=torch.long, device=logits.device)
    logprobs = torch.log_softmax(logits.index_select(0, index).float(), dim=-1)
    picked = torch.tensor([chosen[row] for row in rows], dtype=torch.long, device=logits.device)
    chosen_values = logprobs.gather(1, picked[:, None])[:, 0].tolist()
    k = max(tops)
    if k:
        top = torch.topk(logprobs, k, dim=-1)
        top_values, top_ids = top.values.tolist(), top.indices.tolist()
    result = []
    for i, row in enumerate(rows):
        alternatives = tuple(zip(top_ids[i][: tops[i]], map(_finite, top_values[i][: tops[i]]))) if k else ()
        result.append(TokenLogprob(chosen[row], _finite(chosen_values[i]), alternatives))
    return result
