"""The weight formats' quality check: a packed model against the float32 one, on fixed inputs.

Two figures (issue 15): how many of the fixed chat prompts' greedy continuations agree with float32's on
their first 32 tokens (the bar: at least 18 of 20), and how far the mean log-likelihood of a fixed text
moves (the bar: 1 %). The inputs are data (``weight_quality.json``). Both models generate through the batch
scheduler, as they are served. ``benchmarks/llama_server_bench.py`` prints the full figures; a model test
checks a slice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

INPUTS = Path(__file__).with_name("weight_quality.json")
AGREEMENT_TOKENS = 32
MIN_AGREEING_SHARE = 0.9  # 18 of 20
MAX_LOG_LIKELIHOOD_CHANGE = 0.01


@dataclass(frozen=True)
class QualityReport:
    agreeing: int
    prompts: int
    reference_log_likelihood: float
    candidate_log_likelihood: float
    first_disagreements: tuple[int | None, ...]  # per prompt: the first differing token's index, None if none

    @property
    def log_likelihood_change(self) -> float:
        return abs(self.candidate_log_likelihood - self.reference_log_likelihood) / abs(self.reference_log_likelihood)

    @property
    def passes(self) -> bool:
        return (self.agreeing >= MIN_AGREEING_SHARE * self.prompts
                and self.log_likelihood_change <= MAX_LOG_LIKELIHOOD_CHANGE)

    def summary(self) -> str:
        return (f"greedy {AGREEMENT_TOKENS}-token continuations agreeing with float32: {self.agreeing} of "
                f"{self.prompts}; mean log-likelihood {self.candidate_log_likelihood:.4f} vs float32 "
                f"{self.reference_log_likelihood:.4f} ({self.log_likelihood_change * 100:.2f} % apart); "
                f"{'passes' if self.passes else 'FAILS'}")


def quality_inputs() -> tuple[list[str], str]:
    data = json.loads(INPUTS.read_text())
    return data["prompts"], data["text"]


def greedy_continuations(model, prompts: list[list[int]], tokens: int = AGREEMENT_TOKENS) -> list[list[int]]:
    """Each prompt's first ``tokens`` greedy tokens (end of sequence ignored), all in one batch."""
    from inference.sampling import SamplingParams
    from inference.scheduler import BatchScheduler

    scheduler = BatchScheduler(model, eos_token_ids=set(), pad_token_id=0, max_batch_size=max(1, len(prompts)))
    try:
        params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
        handles = [scheduler.submit(list(prompt), params) for prompt in prompts]
        return [list(handle) for handle in handles]
    finally:
        scheduler.close()


def mean_log_likelihood(model, ids: list[int]) -> float:
    """Mean log-probability of each token of ``ids`` after the ones before it."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids]), use_cache=True).logits[0, :-1].float()
        log_probs = torch.log_softmax(logits, dim=-1)
        return float(log_probs.gather(1, torch.tensor(ids[1:])[:, None]).mean())


def compare(reference, candidate, tokenizer, *, prompts: int | None = None) -> QualityReport:
    """The check on the first ``prompts`` prompts (all by default) and the whole text."""
    questions, text = quality_inputs()
    questions = questions[:prompts] if prompts else questions
    encoded = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=True, return_dict=True)["input_ids"] for q in questions]
    expected = greedy_continuations(reference, encoded)
    got = greedy_continuations(candidate, encoded)
    first = tuple(next((i for i, (a, b) in enumerate(zip(e, g)) if a != b), None) for e, g in zip(expected, got))
    ids = tokenizer.encode(text, add_special_tokens=False)
    return QualityReport(agreeing=sum(index is None for index in first), prompts=len(encoded),
                         reference_log_likelihood=mean_log_likelihood(reference, ids),
                         candidate_log_likelihood=mean_log_likelihood(candidate, ids), first_disagreements=first)
