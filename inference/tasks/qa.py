"""Extractive question answering with the causal LM, constrained to spans of the context.

Asked freely, a 135M chat model answers in long sentences of its own (SQuAD: EM 0, F1 13). Here the
model still writes the answer, but every token it may write must continue a span of the context: the
candidate spans (runs of up to ``MAX_SPAN_UNITS`` words, starting and ending on a word) are tokenized
the way they would follow ``"Answer:"`` and put in a trie, and a beam search walks that trie, ending a
candidate only with the end-of-line token the demonstrations end answers with. A candidate's score is
the model's probability of the whole answer line, ``P(" span\\n" | prompt)``, so short and long spans
compete on the same scale without any length heuristic.

No answer: the trie also holds the abstention line ``" unknown\\n"`` (the demonstrations show one
question the context cannot answer). The answer is ``None`` exactly when that line is more probable
than every context span the search found: the model's own MAP choice, with no threshold to tune.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch

from inference.tasks import DOCUMENT_START, Prefix, compute_prefix, encode, encode_before, shared_prefix

MAX_SPAN_UNITS = 15
MAX_ANSWER_TOKENS = 24
BEAM_WIDTH = 4
ABSTAIN = "unknown"

INSTRUCTION = (
    "Read the context and answer the question with the exact words from the context. "
    f'If the context does not say, answer "{ABSTAIN}".'
)

# Written for this module (not taken from any evaluation set).
DEMONSTRATIONS = (
    (
        "The Harbor Bridge opened in 1932 after eight years of construction. It was designed by the "
        "engineer Mara Lind and carries six lanes of traffic across the river to the old town.",
        "Who designed the Harbor Bridge?",
        "Mara Lind",
    ),
    (
        "Copper kettles were made in the valley until the factory closed in 1978. Most workers moved "
        "to the coastal towns, where fishing offered steadier pay.",
        "How many people worked at the factory?",
        ABSTAIN,
    ),
    (
        "The festival lasts three days each spring. Its main event is a rowing race between the two "
        "villages, which the northern crew has won for the past four years.",
        "Which crew has won the rowing race recently?",
        "the northern crew",
    ),
)

_UNIT = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")
_CAN_START = re.compile(r"[\w$£€]")
_CAN_END = re.compile(r"[\w)%]$")


@dataclass(frozen=True)
class PromptFormat:
    """How a (context, question) pair is laid out, and what an answer line looks like.

    The prompt is ``preamble + head(context) + tail(question)``, and an answer is ``lead + span``
    followed by one of ``stops``; the preamble (instruction and demonstrations) and each context's
    head are cached and shared by all questions on that context.
    """

    name: str
    preamble: str
    head: str  # with {context}
    tail: str  # with {question}
    demonstration_end: str
    lead: str
    stops: tuple[str, ...]

    def build_preamble(self, *, with_demonstrations: bool) -> str:
        text = self.preamble
        if with_demonstrations:
            for context, question, answer in DEMONSTRATIONS:
                text += (self.head.format(context=context) + self.tail.format(question=question)
                         + self.lead + answer + self.demonstration_end)
        return text


PLAIN = PromptFormat(
    name="plain",
    preamble=DOCUMENT_START + INSTRUCTION + "\n\n",
    head="Context: {context}\n",
    tail="Question: {question}\nAnswer:",
    demonstration_end="\n\n",
    lead=" ",
    stops=("\n", "\n\n"),
)

CHAT = PromptFormat(
    name="chat",
    preamble=f"<|im_start|>system\n{INSTRUCTION}<|im_end|>\n",
    head="<|im_start|>user\nContext: {context}\n",
    tail="Question: {question}<|im_end|>\n<|im_start|>assistant\n",
    demonstration_end="<|im_end|>\n",
    lead="",
    stops=("<|im_end|>",),
)

FORMATS = {f.name: f for f in (PLAIN, CHAT)}


@dataclass
class _Node:
    children: dict[int, "_Node"] = field(default_factory=dict)
    span: tuple[int, int] | None = None  # first occurrence in the context, as characters


def candidate_spans(context: str, *, max_units: int = MAX_SPAN_UNITS) -> dict[str, tuple[int, int]]:
    """Every run of up to ``max_units`` words/punctuation marks that starts and ends on a word."""
    units = [(m.start(), m.end(), m.group()) for m in _UNIT.finditer(context)]
    spans: dict[str, tuple[int, int]] = {}
    for i, (start, _, first) in enumerate(units):
        if not _CAN_START.match(first):
            continue
        for j in range(i, min(i + max_units, len(units))):
            _, end, last = units[j]
            if _CAN_END.search(last):
                spans.setdefault(context[start:end], (start, end))
    return spans


def build_trie(tokenizer, context: str, *, lead: str = " ") -> _Node:
    spans = candidate_spans(context)
    texts = list(spans)
    root = _Node()
    if texts:
        # Each span as it reads after "Answer:" (leading space), tokenized canonically; spans whose
        # first word is glued to punctuation in the context ("(NFL)") still get their natural tokens.
        for text, ids in zip(texts, tokenizer([lead + t for t in texts], add_special_tokens=False)["input_ids"]):
            if len(ids) > MAX_ANSWER_TOKENS:
                continue
            node = root
            for token in ids:
                node = node.children.setdefault(token, _Node())
            if node.span is None:
                node.span = spans[text]
    return root


@dataclass
class _Beam:
    score: float
    node: _Node
    row: int  # row of the model batch whose last logits continue this beam


@dataclass
class Candidates:
    """What the search found for one question: the best span and the abstention line, both scored."""

    span: tuple[int, int] | None
    span_logprob: float
    abstain_logprob: float
    finished_logprobs: list[float]
    tokens: int


def _stop_logprob(logprobs: torch.Tensor, stop_ids: list[int]) -> torch.Tensor:
    return torch.logsumexp(logprobs[..., stop_ids], dim=-1)


@torch.inference_mode()
def _search_group(model, tokenizer, fmt: PromptFormat, base: Prefix, context: str, questions: list[str],
                  stop_ids: list[int], *, beam_width: int) -> list[Candidates]:
    head = encode_before(tokenizer, fmt.head.format(context=context), fmt.tail.format(question=""))
    context_prefix = compute_prefix(model, head, base=base)
    trie = build_trie(tokenizer, context, lead=fmt.lead)
    suffixes = [encode(tokenizer, fmt.tail.format(question=q)) for q in questions]
    abstain = encode(tokenizer, fmt.lead + ABSTAIN)
    n, device = len(questions), model.device

    # Each question is followed by the abstention line, teacher-forced in the same pass (and cropped
    # from the cache afterwards). Questions are left-padded after the shared context, so the attention
    # mask has a hole between the context and each question.
    width = max(len(s) for s in suffixes) + len(abstain)
    x = torch.zeros(n, width, dtype=torch.long)
    mask = torch.zeros(n, context_prefix.length + width, dtype=torch.long)
    mask[:, : context_prefix.length] = 1
    positions = torch.zeros(n, width, dtype=torch.long)
    for row, ids in enumerate(suffixes):
        ids = ids + abstain
        pad = width - len(ids)
        x[row, pad:] = torch.tensor(ids)
        mask[row, context_prefix.length + pad :] = 1
        positions[row, pad:] = torch.arange(context_prefix.length, context_prefix.length + len(ids))
    out = model(x.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                past_key_values=context_prefix.cache_for(n), use_cache=True, logits_to_keep=len(abstain) + 1)
    tail = torch.log_softmax(out.logits.float(), dim=-1).cpu()  # (n, len(abstain) + 1, vocab)
    abstain_logprobs = tail[:, :-1].gather(-1, torch.tensor(abstain).expand(n, -1).unsqueeze(-1)).sum((1, 2))
    abstain_logprobs += _stop_logprob(tail[:, -1], stop_ids)
    logprobs = tail[:, 0]
    cache = out.past_key_values
    cache.crop(-len(abstain))
    mask = mask[:, : -len(abstain)]
    next_position = torch.tensor([len(s) for s in suffixes]) + context_prefix.length

    beams: list[list[_Beam]] = [[_Beam(0.0, trie, row)] for row in range(n)]
    best: list[tuple[float, _Node | None]] = [(-math.inf, None)] * n
    finished: list[list[float]] = [[] for _ in range(n)]
    for _step in range(MAX_ANSWER_TOKENS + 1):
        stop = _stop_logprob(logprobs, stop_ids)
        parents, tokens, new_beams = [], [], []
        for q in range(n):
            expansions = []
            for beam in beams[q]:
                if beam.node.span is not None:
                    done = beam.score + stop[beam.row].item()
                    finished[q].append(done)
                    if done > best[q][0]:
                        best[q] = (done, beam.node)
                row_logprobs = logprobs[beam.row]
                for token, child in beam.node.children.items():
                    expansions.append((beam.score + row_logprobs[token].item(), child, beam.row, token))
            # A longer answer only loses probability: drop what can no longer beat the best finished one.
            expansions = [e for e in expansions if e[0] > best[q][0]]
            expansions.sort(key=lambda e: e[0], reverse=True)
            kept = []
            for score, child, row, token in expansions[:beam_width]:
                kept.append(_Beam(score, child, len(parents)))
                parents.append(row)
                tokens.append(token)
            new_beams.append(kept)
        beams = new_beams
        if not parents:
            break
        index = torch.tensor(parents)
        cache.reorder_cache(index.to(device))
        mask = torch.cat([mask[index], torch.ones(len(parents), 1, dtype=torch.long)], dim=1)
        next_position = next_position[index]
        out = model(torch.tensor(tokens, device=device).unsqueeze(1), attention_mask=mask.to(device),
                    position_ids=next_position.unsqueeze(1).to(device), past_key_values=cache, use_cache=True)
        next_position = next_position + 1
        logprobs = torch.log_softmax(out.logits[:, -1].float(), dim=-1).cpu()
        cache = out.past_key_values

    return [
        Candidates(
            span=best[q][1].span if best[q][1] is not None else None,
            span_logprob=best[q][0],
            abstain_logprob=abstain_logprobs[q].item(),
            finished_logprobs=finished[q],
            tokens=context_prefix.length + len(suffixes[q]),
        )
        for q in range(n)
    ]


def search_answers(model, tokenizer, pairs: list[tuple[str, str]], *, prompt_format: str = "plain",
                   beam_width: int = BEAM_WIDTH, with_demonstrations: bool = True,
                   group_size: int = 16) -> list[Candidates | None]:
    """The scored candidates for each pair (``None`` for an empty context); ``answer_questions`` decides."""
    fmt = FORMATS[prompt_format]
    preamble = fmt.build_preamble(with_demonstrations=with_demonstrations)
    base = shared_prefix(model, encode_before(tokenizer, preamble, fmt.head.format(context="")))
    stop_ids = sorted({encode(tokenizer, stop)[0] for stop in fmt.stops} | {tokenizer.eos_token_id})
    groups: dict[str, list[int]] = {}
    for index, (_question, context) in enumerate(pairs):
        groups.setdefault(context, []).append(index)
    found: list[Candidates | None] = [None] * len(pairs)
    for context, indices in groups.items():
        if not context.strip():
            continue
        for first in range(0, len(indices), group_size):
            chunk = indices[first : first + group_size]
            for i, candidates in zip(chunk, _search_group(model, tokenizer, fmt, base, context,
                                                          [pairs[i][0] for i in chunk], stop_ids,
                                                          beam_width=beam_width)):
                found[i] = candidates
    return found


def answer_questions(model, tokenizer, pairs: list[tuple[str, str]], *, allow_abstain: bool = True,
                     **search) -> list[dict]:
    """Answer each ``(question, context)`` with a span of its context, or ``None``.

    Each result: ``answer`` (``context[start:end]`` exactly, or ``None`` when the model prefers
    "unknown" to every span), ``score`` (the chosen answer's share of the probability of all complete
    candidates the search reached, abstention included), ``start``/``end`` (character offsets),
    ``tokens`` (prompt tokens processed for this item: instruction, demonstrations, context, question).
    """
    results = []
    for pair, found in zip(pairs, search_answers(model, tokenizer, pairs, **search)):
        if found is None:
            results.append({"answer": None, "score": 0.0, "start": None, "end": None, "tokens": 0})
            continue
        everything = found.finished_logprobs + ([found.abstain_logprob] if allow_abstain else [])
        total = torch.logsumexp(torch.tensor(everything), 0).item() if everything else -math.inf
        if found.span is None or (allow_abstain and found.abstain_logprob > found.span_logprob):
            score = math.exp(found.abstain_logprob - total) if allow_abstain else 0.0
            results.append({"answer": None, "score": score, "start": None, "end": None, "tokens": found.tokens})
        else:
            start, end = found.span
            results.append({"answer": pair[1][start:end], "score": math.exp(found.span_logprob - total),
                            "start": start, "end": end, "tokens": found.tokens})
    return results
