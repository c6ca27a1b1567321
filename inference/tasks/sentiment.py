"""Binary sentiment with the causal LM: which label word does the model expect next?

Each text is shown after a few labelled demonstrations, as ``Review: <text>\\nSentiment:``, and the
model's next-token log-probabilities of `` negative`` and `` positive`` are compared. Demonstrations
teach the format and the label words and keep the two labels' priors close (they are balanced and
alternate). A 135M model is sensitive to which demonstrations it sees, so several prompts, each
with its own disjoint set of demonstrations, are run and their label distributions averaged in log
space (a prompt ensemble). Before averaging, each member is calibrated: its mean log-probabilities
over a balanced set of film-review sentences written for this module are its label bias, and are
subtracted (``member_biases``). The demonstration part of each prompt is the same for every text: it
is run once per model and its key/value cache reused.

Only two labels: the model has no honest notion of "neutral" here (nothing calibrates a third class),
so ``LABELS`` says what is supported.
"""

from __future__ import annotations

import weakref

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
# Also written for this module, half of each label: the ensemble members' average log-probabilities
# over these are their label biases on in-domain text whose true labels are balanced.
CALIBRATION_TEXTS = (
    ("a warm , funny and surprisingly moving film about growing up .", 1),
    ("the plot is thin , but the performances carry it to a satisfying end .", 1),
    ("a dull , plodding mess that never finds its footing .", 0),
    ("i kept checking my watch .", 0),
    ("one of the year 's most pleasant surprises .", 1),
    ("the jokes land with a thud .", 0),
    ("beautifully shot and confidently directed .", 1),
    ("it wants to be profound but only manages to be pretentious .", 0),
    ("the cast seems to be having a great time , and so did i .", 1),
    ("a tedious exercise in style over substance .", 0),
    ("never less than engaging .", 1),
    ("not nearly as clever as it thinks it is .", 0),
    ("an utterly charming little movie .", 1),
    ("the dialogue is so wooden you could build a house with it .", 0),
    ("a gripping thriller that keeps you guessing until the last minute .", 1),
    ("forgettable from start to finish .", 0),
    ("its heart is in the right place , and it shows .", 1),
    ("the editing is sloppy and the pacing is worse .", 0),
    ("a rare sequel that improves on the original .", 1),
    ("there is nothing here you have n't seen done better elsewhere .", 0),
    ("smart , sharp and often hilarious .", 1),
    ("a bloated , self-indulgent two and a half hours .", 0),
    ("the kind of movie that stays with you for days .", 1),
    ("even the talented lead ca n't save this one .", 0),
    ("sweet without being sappy .", 1),
    ("it 's hard to care about any of these characters .", 0),
    ("a triumph of craft and imagination .", 1),
    ("the script feels like a first draft .", 0),
    ("by the end i was cheering .", 1),
    ("a lazy cash grab .", 0),
    ("quietly powerful .", 1),
    ("neither funny nor scary , just boring .", 0),
    ("the music alone is worth the price of admission .", 1),
    ("a film so confused it forgets its own premise .", 0),
    ("you 'll leave the theater smiling .", 1),
    ("painfully unfunny .", 0),
    ("a thoughtful , well-acted drama .", 1),
    ("the twist is obvious from the first scene .", 0),
    ("it never stops being entertaining .", 1),
    ("an insult to the source material .", 0),
)
SHOTS = 8
PROMPTS = 3  # ensemble members, each with its own SHOTS demonstrations
QUERY = "Review: {text}\nSentiment:"
CONTENT_FREE = ("N/A", "", "[MASK]")
CALIBRATE = "in-domain"  # or "content-free" or "none"


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
                   batch_size: int = 32) -> tuple[torch.Tensor, list[int]]:
    """What each ensemble member says, before calibration or averaging.

    Returns label log-probabilities of shape (prompts, len(texts), len(LABELS)), and each text's prompt
    token count (the shared demonstrations of every member included).
    """
    label_ids = [encode(tokenizer, " " + label)[0] for label in LABELS]
    suffixes = [encode(tokenizer, QUERY.format(text=_normalize_text(text))) for text in texts]
    members, prefix_tokens = [], 0
    for text in prompt_prefixes(prompts=prompts, shots=shots):
        prefix = shared_prefix(model, encode_before(tokenizer, text, "Review:"))
        prefix_tokens += prefix.length
        rows = next_token_logprobs(model, prefix, suffixes, batch_size=batch_size)[:, label_ids]
        members.append(torch.log_softmax(rows, dim=-1))
    return torch.stack(members), [prefix_tokens + prompts * len(s) for s in suffixes]


_bias_memo: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def member_biases(model, tokenizer, mode: str, *, prompts: int = PROMPTS, shots: int = SHOTS) -> torch.Tensor | None:
    """Each member's label bias, shape (prompts, len(LABELS)), to subtract from its log-probabilities.

    ``"in-domain"`` (shipped): the mean log-probabilities over ``CALIBRATION_TEXTS``, film-review
    sentences written for this module, half of each label; a member that leans to one label on them
    leans the same way elsewhere (batch calibration, Zhou et al. 2023, on a held-out set of our own).
    ``"content-free"``: over "N/A", "", "[MASK]" (contextual calibration, Zhao et al. 2021).
    ``"none"``: no calibration. Computed once per model.
    """
    if mode == "none":
        return None
    texts = {"in-domain": [text for text, _ in CALIBRATION_TEXTS], "content-free": list(CONTENT_FREE)}[mode]
    key = (mode, prompts, shots)
    memo = _bias_memo.setdefault(model, {})
    if key not in memo:
        members, _ = label_logprobs(model, tokenizer, texts, prompts=prompts, shots=shots)
        memo[key] = members.mean(1)
    return memo[key]


def combine(members: torch.Tensor, biases: torch.Tensor | None = None) -> torch.Tensor:
    """Label probabilities: each member calibrated (when ``biases`` is given), then their mean log-probability."""
    if biases is not None:
        members = torch.log_softmax(members - biases[:, None, :], dim=-1)
    return torch.softmax(members.mean(0), dim=-1)


def classify_sentiment(model, tokenizer, texts: list[str], *, calibrate: str = CALIBRATE, **options) -> list[dict]:
    """Label each text ``negative`` or ``positive``.

    Each result: ``label``, ``scores`` (label -> probability, summing to 1), ``tokens`` (prompt
    tokens processed for the text, the shared demonstrations of every ensemble member included).
    """
    if not texts:
        return []
    members, tokens = label_logprobs(model, tokenizer, texts, **options)
    probabilities = combine(members, member_biases(model, tokenizer, calibrate, **{
        k: v for k, v in options.items() if k in ("prompts", "shots")}))
    results = []
    for row, count in zip(probabilities.tolist(), tokens):
        scores = dict(zip(LABELS, row))
        results.append({"label": max(scores, key=scores.get), "scores": scores, "tokens": count})
    return results
