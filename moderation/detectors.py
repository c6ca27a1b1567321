"""Moderation detection core: a score in [0, 1] per category, and the spans to mask when redacting.

Pure functions, no Django. ``detect(text)`` and ``detect_many(texts)``:

1. The text is tokenized once and cut into its sentences, each a piece of at most ``CHUNK_TOKENS`` tokens;
   at most ``MAX_CHUNKS`` pieces are read (past that, sentences are joined, then grouped, and the encoder
   reads the start of each group), all in one forward pass of the encoder
   (``moderation.encoder.Encoder``: all-MiniLM-L6-v2, int8, frozen, as it was when the classifier trained).
2. A classifier trained on public moderation data (``moderation/training.py``; the data and how its labels
   map onto the categories: ``moderation/data/label_map.toml`` and ``moderation/data/README.md``) scores
   each piece for the categories it has data for (``classifier.npz``, checked against its manifest
   ``classifier.json``); a text's score is its highest piece's. Thresholds were chosen on development
   splits of the training data and folded into the classifier's biases, so 0.5 (``DEFAULT_THRESHOLD``) is
   every category's threshold.
3. Four categories have (almost) no training data; each is its parent's trained score where a narrow rule
   (``moderation/data/rules.toml``) says the sub-category applies in that piece: sexual/minors (a minor is
   mentioned), violence/graphic (gore vocabulary), self-harm/intent (first person), self-harm/instructions
   (asks how). Two thin trained categories, harassment/threatening and hate/threatening, also take their
   parent's score where a stated threat against a target matches. One rule adds evidence of its own: a
   first-person statement of intent to die or self-harm.
4. A sub-category raises its parent (``moderation.categories.PARENTS``).

Spans: for each flagged category, the sentences of a flagged piece that are flagged on their own (read in
one more pass, only when a piece of several sentences is flagged), or the whole piece when none is; for
the rule-gated categories, the rule's matches.

Nothing here was fitted, tuned or calibrated on ``../shared/data/eval/``.

Determinism: the same text gives the same scores in a process. ``detect_many`` runs the encoder once per
text, on that text's pieces: the int8 layers scale their inputs per forward pass, so batching texts
together would change each text's numbers, and equality with ``detect`` is part of the contract.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import logging
import math
import re
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from moderation import artefact
from moderation.artefact import ArtefactError  # noqa: F401  (raised by Classifier)
from moderation.categories import CATEGORIES, PARENTS
from moderation.encoder import Bert as _Bert  # noqa: F401  (re-exported: the names tests and tools used)
from moderation.encoder import Encoder, encoder_dir, token_counter
from moderation.model_loading import model_loading_lock
from moderation.encoder import encoder_dir as _encoder_dir  # noqa: F401

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD: float = 0.5

# A text is read sentence by sentence (pieces of at most CHUNK_TOKENS tokens, at most MAX_CHUNKS of them:
# 512 tokens in all), and the classifier trained on the pieces of its training rows read the same way.
CHUNK_TOKENS = 64
MAX_CHUNKS = 8
DATA_DIR = Path(__file__).resolve().parent / "data"
RULES_FILE = DATA_DIR / "rules.toml"


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


@dataclass(frozen=True)
class _Chunk:
    start: int  # characters
    end: int
    ids: tuple[int, ...]  # the encoder's token ids for the stretch (at most CHUNK_TOKENS)


def chunks(text: str) -> list[_Chunk]:
    """The stretches of ``text`` the encoder reads: its sentences, each on its own (a sentence longer than
    CHUNK_TOKENS tokens is cut between tokens), so a harmless sentence beside a harmful one does not dilute it.

    Past MAX_CHUNKS sentences, consecutive ones are joined into pieces of at most CHUNK_TOKENS tokens; past
    MAX_CHUNKS such pieces, consecutive pieces are grouped into MAX_CHUNKS stretches and the encoder reads
    the first CHUNK_TOKENS tokens of each. The text is tokenized once; a piece's ids are a slice of the text's.
    """
    encoding = token_counter().encode(text, add_special_tokens=False)
    tokens = [(offset, token) for offset, token in zip(encoding.offsets, encoding.ids) if offset[1] > offset[0]]
    if not tokens:
        return []
    starts = [offset[0] for offset, _ in tokens]
    pieces: list[list[int]] = []  # token ranges
    for start, end in _sentence_spans(text):
        first, last = bisect.bisect_left(starts, start), bisect.bisect_left(starts, end)
        pieces.extend([i, min(i + CHUNK_TOKENS, last)] for i in range(first, last, CHUNK_TOKENS))
    if len(pieces) > MAX_CHUNKS:
        joined: list[list[int]] = []
        for first, last in pieces:
            if joined and last - joined[-1][0] <= CHUNK_TOKENS:
                joined[-1][1] = last
            else:
                joined.append([first, last])
        pieces = joined
    if len(pieces) > MAX_CHUNKS:
        size = math.ceil(len(pieces) / MAX_CHUNKS)
        pieces = [[pieces[i][0], pieces[min(i + size, len(pieces)) - 1][1]] for i in range(0, len(pieces), size)]
    return [
        _Chunk(tokens[first][0][0], tokens[last - 1][0][1], tuple(token for _, token in tokens[first : min(last, first + CHUNK_TOKENS)]))
        for first, last in pieces
    ]


_chunks = chunks  # the name it had


# --------------------------------------------------------------------------------------------------
# The trained classifier


class Classifier:
    """The trained classifier over piece embeddings (``moderation/training.py``): one hidden GELU layer (or
    none), one output per head category, the development thresholds folded into the output biases."""

    def __init__(self, path: Path | None = None) -> None:
        path = path or artefact.classifier_path()
        manifest = artefact.verify(path)
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {name: stored[name] for name in stored.files}
        except (OSError, ValueError) as error:
            raise artefact.error(path, f"cannot load it ({error})") from error
        self.categories = tuple(str(c) for c in arrays.pop("categories"))
        self.adapter = {name.removeprefix("adapter."): arrays.pop(name) for name in list(arrays) if name.startswith("adapter.")}
        if self.categories != tuple(manifest["categories"]) or set(self.categories) - set(CATEGORIES):
            raise artefact.error(path, "its categories are not the manifest's or not moderation categories")
        shift = torch.from_numpy(arrays.pop("shift").astype(np.float32))
        layers = sorted({name.split(".")[0] for name in arrays}, key=lambda name: int(name.removeprefix("layer")))
        self._linears = []
        for name in layers:
            weight = torch.from_numpy(arrays[f"{name}.weight"].astype(np.float32))
            bias = torch.from_numpy(arrays[f"{name}.bias"].astype(np.float32))
            self._linears.append((weight, bias))
        weight, bias = self._linears[-1]
        self._linears[-1] = (weight, bias + shift)
        self.manifest = manifest

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        hidden = torch.from_numpy(vectors.astype(np.float32))
        with torch.inference_mode():
            for index, (weight, bias) in enumerate(self._linears):
                hidden = torch.nn.functional.linear(hidden, weight, bias)
                if index < len(self._linears) - 1:
                    hidden = torch.nn.functional.gelu(hidden)
        return hidden.numpy().astype(np.float64)

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """(rows, len(categories)) probabilities; 0.5 is the development threshold."""
        return 1.0 / (1.0 + np.exp(-self.logits(vectors)))


class _Rules:
    def __init__(self, path: Path = RULES_FILE) -> None:
        with path.open("rb") as stream:
            stored = tomllib.load(stream)
        self.patterns = {name: re.compile(pattern, re.IGNORECASE) for name, pattern in stored["rules"].items()}
        self.statement_score = float(stored["scores"]["self_harm_statement_score"])


# A rule-gated category: (its parent, whose trained score it takes, and the rule that gates it).
GATED: dict[str, tuple[str, str]] = {
    "sexual/minors": ("sexual", "minor"),
    "violence/graphic": ("violence", "gore"),
    "self-harm/intent": ("self-harm", "first_person"),
    "self-harm/instructions": ("self-harm", "asks_how"),
    "harassment/threatening": ("harassment", "threat"),
    "hate/threatening": ("hate", "threat"),
}
_GATED_SPANS = ("sexual/minors", "violence/graphic", "harassment/threatening", "hate/threatening")


# --------------------------------------------------------------------------------------------------
# Putting it together


class _Components:
    def __init__(self) -> None:
        self.classifier = Classifier()
        self.rules = _Rules()
        self.encoder = Encoder(self.classifier.adapter or None)


_components: _Components | None = None
_components_lock = threading.Lock()


def _loaded() -> _Components:
    global _components
    if _components is None:
        with _components_lock:
            if _components is None:
                with model_loading_lock:  # never beside another model's from_pretrained
                    _components = _Components()
    return _components


_plain_encoder: Encoder | None = None


def sentence_encoder() -> Encoder:
    """The packaged all-MiniLM-L6-v2 with its published weights (``/v1/embeddings``): the detectors' own
    encoder, loaded once per process, whenever no fine-tuned adapter was merged into it (none is shipped:
    ``moderation/data/classifier.npz`` holds no ``adapter.*`` arrays). A classifier trained with
    ``--finetune`` changes the detectors' encoder, and then a plain copy is loaded beside it, once."""
    global _plain_encoder
    components = _loaded()
    if not components.classifier.adapter:
        return components.encoder
    if _plain_encoder is None:
        with _components_lock, model_loading_lock:
            if _plain_encoder is None:
                _plain_encoder = Encoder(None)
    return _plain_encoder


def detectors_status() -> str:
    """"ready", "loading" or "not loaded" (for /readyz)."""
    if _components is not None:
        return "ready"
    return "loading" if _components_lock.locked() else "not loaded"


def detectors_load_in_background() -> threading.Thread:
    """Load the components off the request path (server start, beside the model's load)."""
    thread = threading.Thread(target=_loaded, name="moderation-warm-up", daemon=True)
    thread.start()
    return thread


def _within(span: tuple[int, int], chunk: tuple[int, int]) -> bool:
    return chunk[0] <= span[0] < chunk[1]


def _sentence_spans_flagged(text: str, chunk: _Chunk, column: int, components: _Components) -> list[tuple[int, int]]:
    """The sentences of a flagged piece that are flagged on their own (all of them read in one pass)."""
    counter = token_counter()
    sentences = [(start, end) for start, end in _sentence_spans(text) if chunk.start <= start < chunk.end]
    if len(sentences) <= 1:
        return [(chunk.start, chunk.end)]
    pieces = [counter.encode(text[start:end], add_special_tokens=False).ids[:CHUNK_TOKENS] for start, end in sentences]
    keep = [(span, piece) for span, piece in zip(sentences, pieces) if piece]
    probabilities = components.classifier.probabilities(components.encoder.encode_ids([piece for _, piece in keep]))
    flagged = [span for (span, _), p in zip(keep, probabilities[:, column]) if p >= DEFAULT_THRESHOLD]
    return flagged or [(chunk.start, chunk.end)]


def _judge(text: str, components: _Components) -> Detection:
    scores = {category: 0.0 for category in CATEGORIES}
    spans: set[Span] = set()
    pieces = chunks(text)
    if not pieces:
        return Detection(scores=scores, spans=())
    classifier = components.classifier
    probabilities = classifier.probabilities(components.encoder.encode_ids([list(piece.ids) for piece in pieces]))
    for column, category in enumerate(classifier.categories):
        scores[category] = float(probabilities[:, column].max())

    rules = components.rules
    for category, (parent, rule) in GATED.items():
        column = classifier.categories.index(parent)
        matches = [match.span() for match in rules.patterns[rule].finditer(text)]
        for index, piece in enumerate(pieces):
            inside = [span for span in matches if _within(span, (piece.start, piece.end))]
            if not inside:
                continue
            score = float(probabilities[index, column])
            scores[category] = max(scores[category], score)
            if score >= DEFAULT_THRESHOLD and category in _GATED_SPANS:
                spans.update(Span(start, end, category) for start, end in inside)
    statements = [match.span() for match in rules.patterns["self_harm_statement"].finditer(text)]
    if statements:
        scores["self-harm/intent"] = max(scores["self-harm/intent"], rules.statement_score)
        spans.update(Span(start, end, "self-harm/intent") for start, end in statements)

    for child, parent in PARENTS.items():
        scores[parent] = max(scores[parent], scores[child])

    # The trained categories' spans: the flagged sentences of each flagged piece.
    for column, category in enumerate(classifier.categories):
        for index, piece in enumerate(pieces):
            if probabilities[index, column] >= DEFAULT_THRESHOLD:
                for start, end in _sentence_spans_flagged(text, piece, column, components):
                    spans.add(Span(start, end, category))
    # A flagged sub-category without spans of its own (a gated one) redacts what its parent's flagged.
    for child, parent in PARENTS.items():
        if scores[child] >= DEFAULT_THRESHOLD and not any(span.category == child for span in spans):
            spans.update(Span(span.start, span.end, child) for span in list(spans) if span.category == parent)

    rounded = {category: round(min(1.0, max(0.0, scores[category])), 6) for category in CATEGORIES}
    ordered = tuple(sorted(spans, key=lambda span: (span.start, span.end, CATEGORIES.index(span.category))))
    return Detection(scores=rounded, spans=ordered)


def count_tokens(text: str) -> int:
    """Tokens of ``text`` in the moderation encoder's vocabulary (WordPiece), for metering requests.

    Counts the whole text, with no special tokens and no truncation; loads only the tokenizer.
    """
    return len(token_counter().encode(text, add_special_tokens=False).ids)


def detect(text: str) -> Detection:
    """Score one text on every category; see the module docstring."""
    return detect_many([text])[0]


class _RecentDetections:
    """The detections of recently judged texts, by the text's digest (least recently used out first).

    Scores are deterministic, so a text judged again gets the same detection without the encoder: a chat
    client re-sends the whole conversation every turn (and often one system prompt with every request), so
    without this a conversation's n-th turn re-reads all n messages. Holds ``entries`` detections (0: off);
    a detection is a few hundred bytes whatever the text's length, as only the digest is kept.
    """

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._items: collections.OrderedDict[bytes, Detection] = collections.OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def get(self, text: str) -> Detection | None:
        if not self.entries:
            return None
        key = self._key(text)
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, text: str, detection: Detection) -> None:
        if not self.entries:
            return
        key = self._key(text)
        with self._lock:
            self._items[key] = detection
            self._items.move_to_end(key)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_recent = _RecentDetections(0)


def recent_detections() -> _RecentDetections:
    """The process's cache of recent detections, sized by ``SLUICE_MODERATION_CACHE_ENTRIES`` (off without
    Django settings)."""
    from django.conf import settings

    global _recent
    entries = settings.SLUICE_MODERATION_CACHE_ENTRIES if settings.configured else 0
    if _recent.entries != entries:
        _recent = _RecentDetections(entries)
    return _recent


def detect_many(texts: list[str]) -> list[Detection]:
    """Score several texts; each result equals ``detect`` of that text (a recent one's comes from the
    cache, ``recent_detections``)."""
    if not texts:
        return []
    recent = recent_detections()
    results = []
    for text in texts:
        detection = recent.get(text)
        if detection is None:
            detection = _judge(text, _loaded())
            recent.put(text, detection)
        results.append(detection)
    return results
