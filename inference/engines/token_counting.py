"""Token counts for models generated elsewhere (remote engines): the local tokenizer, or an estimate.

Admission reserves prompt + max_tokens before anything is generated, so a remote model's prompt must be
counted here; settlement then uses the upstream's own ``usage`` when it reports one. The local tokenizer is
exact when the upstream serves the same model family; the estimate is deliberately generous (about three
bytes a token, where real tokenizers average nearer four), so a reservation errs high and is refunded.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

from django.conf import settings

BYTES_PER_TOKEN = 3
CHAT_TOKENS_PER_MESSAGE = 4  # role markers and separators of typical chat templates
CHAT_TOKENS_FOR_REPLY = 3


class EstimatedCounter:
    """No tokenizer: lengths from the UTF-8 size. The ids are placeholders; only their number means anything."""

    def count(self, text: str) -> int:
        return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)

    def encode(self, text: str) -> list[int]:
        return [0] * self.count(text)

    def encode_chat(self, messages: list[dict]) -> list[int]:
        total = sum(self.count(m["content"]) + CHAT_TOKENS_PER_MESSAGE for m in messages) + CHAT_TOKENS_FOR_REPLY
        return [0] * total

    def decode(self, token_ids: Sequence[int]) -> str:
        return ""

    def warm_up(self) -> None:
        pass


class LocalTokenizerCounter:
    """The local model's tokenizer: the loaded engine's when this worker serves the local model (``local_engine``
    returns it), otherwise the tokenizer alone (loaded once, without the weights), so a remote-only worker
    stays light."""

    def __init__(self, local_engine: Callable[[], object] | None = None):
        self._local_engine = local_engine
        self._tokenizer = None
        self._lock = threading.Lock()

    def _target(self):
        if self._local_engine is not None:
            return self._local_engine()
        if self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    self._tokenizer = _HuggingFaceTokenizer.from_settings()
        return self._tokenizer

    def warm_up(self) -> None:
        """Load the tokenizer now (worker start), unless it is the local engine's (which loads on its own).

        transformers' lazy imports are not safe against two threads importing it at once (seen here: the
        moderation warm-up and a first request), so a worker loads it before it takes requests."""
        if self._local_engine is None:
            self._target()

    def count(self, text: str) -> int:
        return len(self._target().encode(text))

    def encode(self, text: str) -> list[int]:
        return self._target().encode(text)

    def encode_chat(self, messages: list[dict]) -> list[int]:
        return self._target().encode_chat(messages)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self._target().decode(token_ids)


class _HuggingFaceTokenizer:
    """The configured local model's tokenizer (chat template included), as TransformersEngine uses it."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def from_settings(cls) -> "_HuggingFaceTokenizer":
        from transformers import AutoTokenizer

        from inference.model_files import model_source_from_settings

        source = model_source_from_settings(settings.SLUICE_MODEL_PATH, settings.SLUICE_MODEL_GGUF_FILE)
        converted = settings.SLUICE_MODEL_CACHE_DIR / source.cache_name
        if (converted / "tokenizer_config.json").exists():
            return cls(AutoTokenizer.from_pretrained(str(converted)))
        if source.gguf_file:
            return cls(AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file))
        return cls(AutoTokenizer.from_pretrained(source.path))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def encode_chat(self, messages: list[dict]) -> list[int]:
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(encoded["input_ids"])

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)


def counter_for(tokenizer: str, *, local_engine: Callable[[], object] | None = None):
    """The counter a remote model's ``tokenizer`` setting names: "local" or "none" (an estimate). ``local_engine``
    returns this worker's local engine when it serves one (its tokenizer is then used, not a second copy)."""
    return LocalTokenizerCounter(local_engine) if tokenizer == "local" else EstimatedCounter()
