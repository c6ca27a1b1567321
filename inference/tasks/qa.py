"""Extractive question answering with the causal LM, constrained to spans of the context.

Asked freely, a 135M chat model answers in long sentences of its own (SQuAD: EM 0, F1 13). Here:

1. Focus: the model reads one sentence, a 135M model reads one sentence far better than a paragraph.
   The three sentences that share the most (IDF-weighted) words with the question are candidates
   (``focus_candidates``, the sliding-window baseline of reading comprehension), and the model picks the
   one after which it finds the question most probable (``choose_windows``): shared words miss
   paraphrases, the model's likelihood catches many of them.
2. Constrained decoding: the model writes the answer, but every token must continue a span of that
   sentence. Candidate spans (runs of up to ``MAX_SPAN_UNITS`` words, starting and ending on a word)
   are tokenized the way they read after ``"Answer:"`` and put in a trie; a beam search walks it, and
   a candidate ends only with the end-of-line token that the demonstrations end answers with. Its score
   is the model's probability of the whole answer line, ``P(" span\\n" | prompt)``, so short and long
   spans compete on one scale without a length heuristic. The beams of a question share one cache row
   (tree attention), so no cache is ever copied. Spans of stopwords only ("the", "It") are never
   candidates, and questions that ask for a quantity or a date (how many, what year, when: ``answer_type``)
   only get spans that contain a number, when the sentence has any: the answer-type cue of classic QA.
3. No answer (``abstains``): the best span is kept only if the question makes it more probable than a
   question that asks for nothing in particular (``NULL_QUESTION``): pointwise mutual information > 0,
   a threshold fixed by its meaning rather than tuned. Asking the model to say "unknown" itself was
   tried and is kept for the ablation: with an "unknown" demonstration it abstains on most answerable
   questions, without one it never does.

Nothing here was fitted to an evaluation set; the demonstrations were written for this module. Variants
were compared on the development set in ``benchmarks/devdata/`` (SQuAD train questions), never on the
SQuAD dev questions that ``benchmarks/task_eval*.py`` score.
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
FOCUS = 1  # sentences read per question (None: the whole context)
FOCUS_CANDIDATES = 3  # windows (best by shared words) among which the model's likelihood of the question picks
LEAD_IN = True  # the question's likelihood is read after each candidate window and the sentence before it
ANSWER_TYPES = True  # "how many"/"what year"/"when" questions take a span with a number when the window has one
ABSTAIN_RULE = "pmi"
DEMONSTRATIONS_USED = "answerable"
# Asks for nothing in particular: a span that the real question makes no more likely than this one
# was not picked because of the question.
NULL_QUESTION = "What does the context mention?"
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

    def build_preamble(self, *, demonstrations: str = "all") -> str:
        """``demonstrations``: "all", "answerable" (without the abstention example) or "none"."""
        text = self.preamble
        if demonstrations != "none":
            for context, question, answer in DEMONSTRATIONS:
                if demonstrations == "answerable" and answer == ABSTAIN:
                    continue
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


_NUMBER_WORDS = frozenset(
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million billion "
    "trillion dozen dozens hundreds thousands millions billions half once twice".split()
)
_MONTHS = frozenset("january february march april may june july august september october november december".split())
# Question openings whose answer is a quantity or a date: a span without a number cannot be it.
_NUMERIC_QUESTION = re.compile(
    r"\b(how (many|much|long|old|large|big|tall|high|far|fast)|what (year|years|percentage|percent|decade|century|"
    r"date|day|month|age|number|amount)|which (year|decade|century|date)|when|in what year)\b",
    re.IGNORECASE,
)


def answer_type(question: str) -> str | None:
    """``"number"`` for questions whose answer is a quantity or a date (how many, what year, when...); else None.

    The wh-word cue of classic QA systems: a 135M model often answers "When was it built?" with a
    name from the sentence; a span without a number cannot be a date or a count.
    """
    return "number" if _NUMERIC_QUESTION.search(question) else None


def _has_number(text: str) -> bool:
    return any(ch.isdigit() for ch in text) or any(
        word in _NUMBER_WORDS or word in _MONTHS for word in re.findall(r"[a-z]+", text.lower()))


def _is_filler(text: str) -> bool:
    # Only stopwords ("the", "It", "of the"): never an answer, but a 135M model likes to start with them.
    return all(word.lower() in _STOPWORDS for word in re.findall(r"\w+", text))


def candidate_spans(context: str, *, max_units: int = MAX_SPAN_UNITS, kind: str | None = None) -> dict[str, tuple[int, int]]:
    """Every run of up to ``max_units`` words/punctuation marks that starts and ends on a word.

    Spans of stopwords only are left out. With ``kind="number"`` only spans that contain a number
    (digits, number words, months) are kept, when the context has any.
    """
    units = [(m.start(), m.end(), m.group()) for m in _UNIT.finditer(context)]
    spans: dict[str, tuple[int, int]] = {}
    for i, (start, _, first) in enumerate(units):
        if not _CAN_START.match(first):
            continue
        for j in range(i, min(i + max_units, len(units))):
            _, end, last = units[j]
            if _CAN_END.search(last):
                text = context[start:end]
                if not _is_filler(text):
                    spans.setdefault(text, (start, end))
    if kind == "number":
        numeric = {text: span for text, span in spans.items() if _has_number(text)}
        if numeric:
            return numeric
    return spans


def build_trie(tokenizer, context: str, *, lead: str = " ", kind: str | None = None) -> _Node:
    spans = candidate_spans(context, kind=kind)
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
    column: int  # where, in its question's row of the last step's logits, this beam's next token is
    ancestors: tuple[int, ...]  # cache slots of the answer tokens so far


@dataclass
class Candidates:
    """What the search found for one question: its best span and the scores the no-answer rules use."""

    span: tuple[int, int] | None
    span_logprob: float
    abstain_logprob: float
    finished_logprobs: list[float]
    tokens: int
    null_logprob: float = math.nan  # the span's log-probability after NULL_QUESTION instead of the question


def _stop_logprob(logprobs: torch.Tensor, stop_ids: list[int]) -> torch.Tensor:
    return torch.logsumexp(logprobs[..., stop_ids], dim=-1)


@torch.inference_mode()
def _search(model, prefix: Prefix, suffixes: list[list[int]], tries: list[_Node], abstain: list[int],
            stop_ids: list[int], *, beam_width: int) -> list[Candidates]:
    """Beam search over each row's trie, all rows batched after one shared cached ``prefix``."""
    n, device = len(suffixes), model.device

    # Each row is followed by the abstention line, teacher-forced in the same pass (and cropped from
    # the cache afterwards). Rows are left-padded after the shared prefix, so the attention mask has a
    # hole between the prefix and each row.
    width = max(len(s) for s in suffixes) + len(abstain)
    x = torch.zeros(n, width, dtype=torch.long)
    mask = torch.zeros(n, prefix.length + width, dtype=torch.long)
    mask[:, : prefix.length] = 1
    positions = torch.zeros(n, width, dtype=torch.long)
    for row, ids in enumerate(suffixes):
        ids = ids + abstain
        pad = width - len(ids)
        x[row, pad:] = torch.tensor(ids)
        mask[row, prefix.length + pad :] = 1
        positions[row, pad:] = torch.arange(prefix.length, prefix.length + len(ids))
    out = model(x.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                past_key_values=prefix.cache_for(n), use_cache=True, logits_to_keep=len(abstain) + 1)
    tail = torch.log_softmax(out.logits.float(), dim=-1).cpu()  # (n, len(abstain) + 1, vocab)
    abstain_logprobs = tail[:, :-1].gather(-1, torch.tensor(abstain).expand(n, -1).unsqueeze(-1)).sum((1, 2))
    abstain_logprobs += _stop_logprob(tail[:, -1], stop_ids)
    logprobs = tail[:, :1]  # (n, 1, vocab): the first answer token, after each question
    cache = out.past_key_values
    # The beams of one question share its cache row: each step appends one slot per beam, and a 4D
    # mask lets every beam see the prompt and its own ancestors only (tree attention). No cache rows
    # are ever copied or reordered, which on CPU costs more than the forward passes themselves.
    visible = mask.bool()
    visible[:, visible.shape[1] - len(abstain) :] = False  # the teacher-forced abstention line
    question_end = torch.tensor([len(s) for s in suffixes]) + prefix.length

    beams: list[list[_Beam]] = [[_Beam(0.0, tries[q], 0, ())] for q in range(n)]
    best: list[tuple[float, _Node | None]] = [(-math.inf, None)] * n
    finished: list[list[float]] = [[] for _ in range(n)]
    for _step in range(MAX_ANSWER_TOKENS + 1):
        stop = _stop_logprob(logprobs, stop_ids)
        chosen = []
        for q in range(n):
            expansions = []
            for beam in beams[q]:
                if beam.node.span is not None:
                    done = beam.score + stop[q, beam.column].item()
                    finished[q].append(done)
                    if done > best[q][0]:
                        best[q] = (done, beam.node)
                row = logprobs[q, beam.column]
                for token, child in beam.node.children.items():
                    expansions.append((beam.score + row[token].item(), child, beam.ancestors, token))
            # A longer answer only loses probability: drop what can no longer beat the best finished one.
            expansions = [e for e in expansions if e[0] > best[q][0]]
            expansions.sort(key=lambda e: e[0], reverse=True)
            chosen.append(expansions[:beam_width])
        if not any(chosen):
            break
        width = max(len(c) for c in chosen)
        length = visible.shape[1]
        step_mask = torch.zeros(n, 1, width, length + width, dtype=torch.bool)
        step_mask[:, 0, :, :length] = visible[:, None, :]
        tokens = torch.zeros(n, width, dtype=torch.long)
        positions = torch.zeros(n, width, dtype=torch.long)
        new_beams = []
        for q, expansions in enumerate(chosen):
            kept = []
            for column in range(width):
                step_mask[q, 0, column, length + column] = True  # itself (also keeps unused columns valid)
                if column >= len(expansions):
                    continue
                score, child, ancestors, token = expansions[column]
                step_mask[q, 0, column, list(ancestors)] = True
                tokens[q, column] = token
                positions[q, column] = question_end[q] + len(ancestors)
                kept.append(_Beam(score, child, column, ancestors + (length + column,)))
            new_beams.append(kept)
        beams = new_beams
        visible = torch.cat([visible, torch.zeros(n, width, dtype=torch.bool)], dim=1)
        out = model(tokens.to(device), attention_mask=step_mask.to(device), position_ids=positions.to(device),
                    past_key_values=cache, use_cache=True)
        logprobs = torch.log_softmax(out.logits.float(), dim=-1).cpu()
        cache = out.past_key_values

    return [
        Candidates(
            span=best[q][1].span if best[q][1] is not None else None,
            span_logprob=best[q][0],
            abstain_logprob=abstain_logprobs[q].item(),
            finished_logprobs=finished[q],
            tokens=prefix.length + len(suffixes[q]),
        )
        for q in range(n)
    ]


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"”’)\]]*\s+(?=[\"“(\[]?[A-Z0-9])")
_STOPWORDS = frozenset(
    "a an the of in on at to for from by with and or but is are was were be been being do does did what "
    "which who whom whose when where why how that this these those it its as into than then there their "
    "they he she his her him them we you your i not no".split()
)


def _stems(text: str) -> set[str]:
    # A crude stem (the first six letters) so that "broadcasted" meets "broadcast".
    return {word[:6] for word in re.findall(r"\w+", text.lower()) if word not in _STOPWORDS}


def sentences(context: str) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for match in _SENTENCE_END.finditer(context):
        bounds.append((start, match.start()))
        start = match.end()
    bounds.append((start, len(context)))
    return [(a, b) for a, b in bounds if context[a:b].strip()]


def focus_candidates(question: str, context: str, *, size: int, count: int = 1) -> list[tuple[int, int]]:
    """The ``count`` windows of ``size`` consecutive sentences that share the most (IDF-weighted) words with
    the question, best first.

    The sliding-window baseline of reading comprehension: a 135M model reads one or two sentences far
    better than a whole paragraph, and the answer sentence usually repeats the question's rarer words.
    Windows are contiguous, so spans inside them are spans of the context.
    """
    bounds = sentences(context)
    if len(bounds) <= size:
        return [(0, len(context))]
    bags = [_stems(context[a:b]) for a, b in bounds]
    wanted = _stems(question)
    idf = {w: math.log((len(bags) + 1) / (0.5 + sum(w in bag for bag in bags))) for w in wanted}
    scored = []
    for first in range(len(bounds) - size + 1):
        window = set().union(*bags[first : first + size])
        scored.append((-sum(idf[w] for w in wanted if w in window), first))
    scored.sort()  # best score first; ties keep document order
    return [(bounds[first][0], bounds[first + size - 1][1]) for _, first in scored[:count]]


def focus_window(question: str, context: str, *, size: int) -> tuple[int, int]:
    """The best window of ``focus_candidates`` by shared words alone."""
    return focus_candidates(question, context, size=size)[0]


@torch.inference_mode()
def _continuation_logprobs(model, prefix: Prefix, prompts: list[list[int]], continuations: list[list[int]], *,
                           batch_size: int = 16) -> list[float]:
    """log P(continuation | prefix + prompt) per row; the LM head runs on the continuation positions only."""
    device, out = model.device, []
    for first in range(0, len(prompts), batch_size):
        rows = [p + c for p, c in zip(prompts[first : first + batch_size], continuations[first : first + batch_size])]
        width = max(len(r) for r in rows)
        x = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            x[i, : len(r)] = torch.tensor(r)
        positions = torch.arange(prefix.length, prefix.length + width).unsqueeze(0).expand(len(rows), -1)
        hidden = model.model(x.to(device), position_ids=positions.to(device), past_key_values=prefix.cache_for(len(rows)),
                             use_cache=True).last_hidden_state
        for i, (p, c) in enumerate(zip(prompts[first : first + batch_size], continuations[first : first + batch_size])):
            logits = model.lm_head(hidden[i, len(p) - 1 : len(p) + len(c) - 1])
            steps = torch.log_softmax(logits.float(), dim=-1).cpu()
            out.append(steps[torch.arange(len(c)), torch.tensor(c)].sum().item())
    return out


def choose_windows(model, tokenizer, base: Prefix, fmt: "PromptFormat",
                   items: list[tuple[str, str, list[tuple[int, int]]]]) -> list[tuple[int, int]]:
    """For each ``(question, context, windows)``, the window after which the model finds the question most
    probable: log P(question | window), all items' windows batched together.

    Shared words miss paraphrases ("formed" for "established"); the LM's own likelihood of the question
    given each candidate window catches many of them. The question is the same for every window of an
    item, so the probabilities compare directly, with no prior to divide out.
    """
    question_field = fmt.tail.split("{question}")[0].rstrip(" ")  # "Question:"
    prompts, asked, owners = [], [], []
    for item, (question, context, windows) in enumerate(items):
        if len(windows) < 2:
            continue
        tokens = encode(tokenizer, " " + question)
        starts = [start for start, _ in sentences(context)]
        for a, b in windows:
            # Read with the sentence before it, which its pronouns ("Its first director") refer to.
            lead_in = max([start for start in starts if start < a], default=a) if LEAD_IN else a
            prompts.append(encode_before(tokenizer, fmt.head.format(context=context[lead_in:b]), question_field)
                           + encode(tokenizer, question_field))
            asked.append(tokens)
            owners.append((item, (a, b)))
    chosen = [windows[0] for _, _, windows in items]
    best = [-math.inf] * len(items)
    if prompts:
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(asked[i]))  # less padding
        scores = _continuation_logprobs(model, base, [prompts[i] for i in order], [asked[i] for i in order])
        for i, score in zip(order, scores):
            item, window = owners[i]
            if score > best[item]:
                best[item], chosen[item] = score, window
    return chosen


@torch.inference_mode()
def _null_logprobs(model, prefix: Prefix, prompts: list[list[int]], answers: list[list[int]],
                   stop_ids: list[int]) -> list[float]:
    """log P(answer + stop | prefix + prompt) for each row, teacher-forced in one right-padded pass."""
    device = model.device
    rows = [p + a for p, a in zip(prompts, answers)]
    width = max(len(r) for r in rows)
    x = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, : len(r)] = torch.tensor(r)
    positions = torch.arange(prefix.length, prefix.length + width).unsqueeze(0).expand(len(rows), -1)
    logits = model(x.to(device), position_ids=positions.to(device), past_key_values=prefix.cache_for(len(rows)),
                   use_cache=True).logits
    out = []
    for i, (p, a) in enumerate(zip(prompts, answers)):
        steps = torch.log_softmax(logits[i, len(p) - 1 : len(p) + len(a)].float(), dim=-1).cpu()
        out.append(steps[torch.arange(len(a)), torch.tensor(a)].sum().item() + _stop_logprob(steps[-1], stop_ids).item())
    return out


def search_answers(model, tokenizer, pairs: list[tuple[str, str]], *, prompt_format: str = "plain",
                   beam_width: int = BEAM_WIDTH, demonstrations: str = DEMONSTRATIONS_USED,
                   focus: int | None = FOCUS, focus_candidates_count: int = FOCUS_CANDIDATES,
                   answer_types: bool = ANSWER_TYPES, null_check: bool = True,
                   batch_size: int = 32) -> list[Candidates | None]:
    """The scored candidates for each pair (``None`` for an empty context); ``answer_questions`` decides.

    With ``focus`` the model reads only one window of that many sentences: of the ``focus_candidates_count``
    windows sharing the most words with the question, the one after which the model finds the question
    most probable (``choose_windows``). With ``answer_types``, quantity and date questions only get
    spans that contain a number (``answer_type``), when the window has any.
    Spans are always character offsets into the full context. Questions that share a passage share its
    cache; lone passages are batched together behind the shared instruction and demonstrations.
    """
    fmt = FORMATS[prompt_format]
    preamble = fmt.build_preamble(demonstrations=demonstrations)
    base = shared_prefix(model, encode_before(tokenizer, preamble, fmt.head.format(context="")))
    stop_ids = sorted({encode(tokenizer, stop)[0] for stop in fmt.stops} | {tokenizer.eos_token_id})
    abstain = encode(tokenizer, fmt.lead + ABSTAIN)
    empty_question = fmt.tail.format(question="")
    null_tail = encode(tokenizer, fmt.tail.format(question=NULL_QUESTION))

    present = [index for index, (_, context) in enumerate(pairs) if context.strip()]
    if focus:
        windows = choose_windows(model, tokenizer, base, fmt, [
            (pairs[i][0], pairs[i][1], focus_candidates(*pairs[i], size=focus, count=focus_candidates_count))
            for i in present])
    else:
        windows = [(0, len(pairs[i][1])) for i in present]
    groups: dict[tuple[str, int], list[int]] = {}
    for index, (start, end) in zip(present, windows):
        groups.setdefault((pairs[index][1][start:end], start), []).append(index)

    found: list[Candidates | None] = [None] * len(pairs)
    tries: dict[tuple[str, str | None], _Node] = {}

    def trie_for(passage: str, kind: str | None) -> _Node:
        if (passage, kind) not in tries:
            tries[passage, kind] = build_trie(tokenizer, passage, lead=fmt.lead, kind=kind)
        return tries[passage, kind]

    def kind_of(index: int) -> str | None:
        return answer_type(pairs[index][0]) if answer_types else None

    def run(prefix: Prefix, members: list[tuple[int, int, list[int], str]]) -> None:
        for first in range(0, len(members), batch_size):
            chunk = members[first : first + batch_size]
            results = _search(model, prefix, [m[2] for m in chunk], [trie_for(m[3], kind_of(m[0])) for m in chunk], abstain,
                              stop_ids, beam_width=beam_width)
            spans = [(member, c) for member, c in zip(chunk, results) if c.span is not None]
            if spans and null_check:
                nulls = _null_logprobs(
                    model, base,
                    [encode_before(tokenizer, fmt.head.format(context=m[3]), empty_question) + null_tail
                     for m, _ in spans],
                    [encode(tokenizer, fmt.lead + m[3][c.span[0] : c.span[1]]) for m, c in spans],
                    stop_ids,
                )
                for (_, candidates), null in zip(spans, nulls):
                    candidates.null_logprob = null
            for (index, offset, _, _), candidates in zip(chunk, results):
                if candidates.span is not None:
                    candidates.span = (candidates.span[0] + offset, candidates.span[1] + offset)
                found[index] = candidates

    lone = []
    for (passage, offset), indices in groups.items():
        head = encode_before(tokenizer, fmt.head.format(context=passage), empty_question)
        if len(indices) == 1:
            question = pairs[indices[0]][0]
            lone.append((indices[0], offset, head + encode(tokenizer, fmt.tail.format(question=question)), passage))
            continue
        context_prefix = compute_prefix(model, head, base=base)
        run(context_prefix, [(i, offset, encode(tokenizer, fmt.tail.format(question=pairs[i][0])), passage)
                             for i in indices])
    lone.sort(key=lambda member: len(member[2]))  # less padding per batch
    run(base, lone)
    return found


def abstains(candidates: Candidates, *, rule: str = "mass") -> bool:
    """Whether the model prefers "no answer" for these candidates.

    ``"pmi"`` (shipped): the question does not make the best span more probable than ``NULL_QUESTION``
    does (pointwise mutual information <= 0), so nothing in the passage answers *this* question. The
    other two need the "unknown" demonstration: ``"mass"``, the abstention line is more probable than
    all completed spans together; ``"best"``, more probable than the best span. ``"never"``: always
    answer with a span.
    """
    if rule == "never":
        return False
    if rule == "pmi":
        if math.isnan(candidates.null_logprob):
            raise ValueError("the 'pmi' rule needs search_answers(..., null_check=True)")
        return not candidates.span_logprob > candidates.null_logprob
    if rule == "best":
        return candidates.abstain_logprob > candidates.span_logprob
    if rule == "mass":
        if not candidates.finished_logprobs:
            return True
        return candidates.abstain_logprob > torch.logsumexp(torch.tensor(candidates.finished_logprobs), 0).item()
    raise ValueError(f"unknown no-answer rule {rule!r}")


def answer_questions(model, tokenizer, pairs: list[tuple[str, str]], *, abstain_rule: str = ABSTAIN_RULE,
                     **search) -> list[dict]:
    """Answer each ``(question, context)`` with a span of its context, or ``None``.

    Each result: ``answer`` (``context[start:end]`` exactly, or ``None`` when the model finds "no
    answer" more probable, see ``abstains``), ``score`` (the chosen line's share of the probability of
    all complete candidates the search reached, abstention included), ``start``/``end`` (character
    offsets), ``tokens`` (prompt tokens processed for this item: instruction, demonstrations,
    passage, question).
    """
    results = []
    for pair, found in zip(pairs, search_answers(model, tokenizer, pairs, **search)):
        if found is None:
            results.append({"answer": None, "score": 0.0, "start": None, "end": None, "tokens": 0})
            continue
        lines = found.finished_logprobs + ([found.abstain_logprob] if abstain_rule != "never" else [])
        total = torch.logsumexp(torch.tensor(lines), 0).item() if lines else 0.0
        if found.span is None or abstains(found, rule=abstain_rule):
            score = math.exp(found.abstain_logprob - total) if abstain_rule != "never" else 0.0
            results.append({"answer": None, "score": score, "start": None, "end": None, "tokens": found.tokens})
        else:
            start, end = found.span
            results.append({"answer": pair[1][start:end], "score": math.exp(found.span_logprob - total),
                            "start": start, "end": end, "tokens": found.tokens})
    return results
