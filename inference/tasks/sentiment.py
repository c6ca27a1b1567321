"""Binary sentiment with the causal LM: which label word does the model expect next?

Each text is shown after a few labelled demonstrations, as ``Review: <text>\\nSentiment:``, and the
model's next-token log-probabilities of `` negative`` and `` positive`` are compared. Demonstrations
teach the format and the label words and keep the two labels' priors close (they are balanced and
alternate). A 135M model is sensitive to which demonstrations it sees, so several prompts, each
with its own disjoint set of demonstrations, are run and their label distributions averaged in log
space (a prompt ensemble). The instruction/demonstration part of each prompt is the same for every
text: it is run once per model and its key/value cache reused.

Only two labels: the model has no honest notion of "neutral" here (nothing calibrates a third class),
so ``LABELS`` says what is supported.
"""

from __future__ import annotations

import torch

from inference.tasks import DOCUMENT_START, encode, encode_before, next_token_logprobs, shared_prefix

LABELS = ("negative", "positive")

# Written for this module in the style of short film-review snippets (not taken from any evaluation
# set). Index = label: 0 negative, 1 positive.
DEMONSTRATIONS = (
    ("a gorgeous , witty and deeply felt film .", 1),
    ("the story goes nowhere and takes its time getting there .", 0),
    ("an absorbing portrait of a family under pressure .", 1),
    ("flat , lifeless and badly acted .", 0),
    ("the funniest movie i have seen in years .", 1),
    ("a muddled script undermines a promising premise .", 0),
    ("it 's a small film , but a genuinely touching one .", 1),
    ("more annoying than amusing .", 0),
    ("a bold and rewarding experience .", 1),
    ("the characters are so thin that nothing they do matters .", 0),
    ("tender , honest and beautifully played .", 1),
    ("a waste of a talented cast .", 0),
    ("the action scenes are thrilling and inventive .", 1),
    ("it drags on long after it has run out of ideas .", 0),
    ("does n't try too hard , and that is its charm .", 1),
    ("too silly to take seriously and too serious to enjoy .", 0),
    ("a lovely , unhurried story told with real warmth .", 1),
    ("the ending is a cheap trick that cheats the audience .", 0),
    ("sharp writing and a terrific lead performance .", 1),
    ("a noisy , joyless sequel .", 0),
    ("a clever and original comedy that earns its laughs .", 1),
    ("i could not wait for it to be over .", 0),
    ("moving without ever being manipulative .", 1),
    ("the performances are stiff and the story is predictable .", 0),
)
SHOTS = 8
PROMPTS = 3  # ensemble members, each with its own SHOTS demonstrations
QUERY = "Review: {text}\nSentiment:"
CONTENT_FREE = ("N/A", "", "[MASK]")


def _demonstration_block(members: tuple[tuple[str, int], ...]) -> str:
    return "".join(QUERY.format(text=text) + " " + LABELS[label] + "\n\n" for text, label in members)


def prompt_prefixes(*, prompts: int = PROMPTS, shots: int = SHOTS) -> list[str]:
    """The shared part of each ensemble member: disjoint, label-alternating demonstration sets."""
    if prompts * shots > len(DEMONSTRATIONS):
        raise ValueError(f"{prompts} prompts of {shots} shots need more than {len(DEMONSTRATIONS)} demonstrations")
    return [DOCUMENT_START + _demonstration_block(DEMONSTRATIONS[i * shots : (i + 1) * shots]) for i in range(prompts)]


def _normalize_text(text: str) -> str:
    # One line: a newline inside the text would end the "Review:" field of the prompt.
    return " ".join(text.split())


@torch.inference_mode()
def label_logprobs(model, tokenizer, texts: list[str], *, prompts: int = PROMPTS, shots: int = SHOTS,
                   calibrate: bool = False, batch_size: int = 32) -> tuple[torch.Tensor, list[int]]:
    """Per-prompt label log-probabilities, shape (prompts, len(texts), len(LABELS)), and token counts.

    With ``calibrate`` each prompt's log-probabilities are shifted by those it gives content-free
    inputs ("N/A", "", "[MASK]"), the contextual calibration of Zhao et al. (2021).
    """
    label_ids = [encode(tokenizer, " " + label)[0] for label in LABELS]
    suffixes = [encode(tokenizer, QUERY.format(text=_normalize_text(text))) for text in texts]
    per_prompt = []
    prefix_tokens = 0
    for text in prompt_prefixes(prompts=prompts, shots=shots):
        prefix = shared_prefix(model, encode_before(tokenizer, text, "Review:"))
        prefix_tokens += prefix.length
        logprobs = torch.log_softmax(next_token_logprobs(model, prefix, suffixes, batch_size=batch_size)[:, label_ids], -1)
        if calibrate:
            free = [encode(tokenizer, QUERY.format(text=t)) for t in CONTENT_FREE]
            bias = torch.log_softmax(next_token_logprobs(model, prefix, free)[:, label_ids], -1).mean(0)
            logprobs = torch.log_softmax(logprobs - bias, -1)
        per_prompt.append(logprobs)
    tokens = [prefix_tokens + prompts * len(s) for s in suffixes]
    return torch.stack(per_prompt), tokens


def classify_sentiment(model, tokenizer, texts: list[str], **options) -> list[dict]:
    """Label each text ``negative`` or ``positive``.

    Each result: ``label``, ``scores`` (label -> probability, summing to 1: the ensemble's mean
    log-probabilities, renormalized), ``tokens`` (prompt tokens processed for the text, the shared
    demonstrations of every ensemble member included).
    """
    if not texts:
        return []
    per_prompt, tokens = label_logprobs(model, tokenizer, texts, **options)
    probabilities = torch.softmax(per_prompt.mean(0), dim=-1)
    results = []
    for row, count in zip(probabilities.tolist(), tokens):
        scores = dict(zip(LABELS, row))
        results.append({"label": max(scores, key=scores.get), "scores": scores, "tokens": count})
    return results
