"""The embedding model of ``/v1/embeddings``: the packaged all-MiniLM-L6-v2 sentence encoder, the one copy
moderation already holds in the process (``moderation.services.moderation_sentence_encoder``), read the way
sentence-transformers reads it (mean pooling over the tokens, L2 normalised, 256 positions at most).

Texts from concurrent requests are batched into shared passes (``MicroBatcher``), on one torch thread beside
the generator like the task models (``inference.torch_threads``). Within a batch the texts are sorted by
length and cut into passes of similar lengths, so short texts do not pay for a long one's padding; the
vectors do not depend on what shares a pass (``Encoder.embed_ids`` runs it in float32).
``SLUICE_EMBEDDING_PRECISION=int8`` runs moderation's int8 pass instead, one text per pass: about 3.5 times
the texts per second here, vectors at cosine ~0.98 of the model's float32 ones (benchmarks/embedding_bench.py).
"""

from __future__ import annotations

import threading

import numpy as np

from inference.microbatch import MicroBatcher
from moderation.encoder import token_counter
from moderation.services import moderation_sentence_encoder

EMBEDDING_MODEL_ID = "all-MiniLM-L6-v2"
EMBEDDING_MODELS = (EMBEDDING_MODEL_ID,)  # listed in /v1/models after the generators
DIMENSIONS = 384
# sentence-transformers reads this model's first 256 word pieces (its sentence_bert_config.json), [CLS] and
# [SEP] included; a longer text is refused rather than cut silently (OpenAI refuses too-long input as well).
WINDOW_TOKENS = 256
MAX_TEXT_TOKENS = WINDOW_TOKENS - 2
# One pass holds at most this many rows and this many (padded) positions.
PASS_ROWS = 64
PASS_POSITIONS = 8192


def text_token_ids(text: str) -> list[int]:
    """The encoder's word pieces of ``text`` (no [CLS]/[SEP], nothing cut)."""
    return token_counter().encode(text, add_special_tokens=False).ids


def _passes(order: list[int], lengths: list[int]) -> list[list[int]]:
    """Indices grouped into passes, ``order`` sorted by length: each pass at most PASS_ROWS rows and
    PASS_POSITIONS positions (rows x its longest row)."""
    passes: list[list[int]] = []
    for index in order:
        current = passes[-1] if passes else None
        if current is None or len(current) >= PASS_ROWS or (len(current) + 1) * (lengths[index] + 2) > PASS_POSITIONS:
            passes.append([index])
        else:
            current.append(index)
    return passes


class EmbeddingModel:
    def __init__(self, *, precision: str = "float32") -> None:
        self._encoder = moderation_sentence_encoder()
        self.precision = precision
        self._batcher = MicroBatcher(self._run, max_items=256, name="embedding-model", threads=1)

    def embed(self, pieces: list[list[int]]) -> list[np.ndarray]:
        """Unit-length float32 vectors of token-id lists (each at most MAX_TEXT_TOKENS), in order."""
        return self._batcher.submit(pieces)

    def _run(self, pieces: list[list[int]]) -> list[np.ndarray]:
        if self.precision == "int8":
            # Moderation's own int8 pass, one text per pass: its activation scale is set per pass, so a text
            # sharing a pass would get another vector; alone, it always gets the same one.
            return [self._encoder.encode_ids([piece])[0].astype(np.float32) for piece in pieces]
        lengths = [len(piece) for piece in pieces]
        found: list[np.ndarray | None] = [None] * len(pieces)
        for group in _passes(sorted(range(len(pieces)), key=lengths.__getitem__), lengths):
            vectors = self._encoder.embed_ids([pieces[index] for index in group])
            for index, vector in zip(group, vectors):
                found[index] = vector
        return found


_model: EmbeddingModel | None = None
_lock = threading.Lock()


def embedding_model() -> EmbeddingModel:
    """The process's embedding model (the moderation encoder's copy; loading it if moderation has not)."""
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                from django.conf import settings

                _model = EmbeddingModel(precision=settings.SLUICE_EMBEDDING_PRECISION)
    return _model
