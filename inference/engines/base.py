"""The engine interface: what every engine implements and what callers may rely on.

An engine owns one model: it tokenizes, applies the chat template and generates. Local engines
(transformers), the fake engine of the tests and remote ones (an upstream OpenAI-compatible server) implement
the same small interface, so views and services never know which one they talk to. This module sits at the
bottom of ``inference.engines``: it imports none of the implementations, and nothing here picks one
(``inference.engines.factory`` does).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

from inference.detokenize import IncrementalDecoder, StopMatcher
from inference.logprob_entries import LogprobEntry, from_token_ids
from inference.fair_queue import Share
from inference.sampling import SamplingParams

T = TypeVar("T")


class EngineBusy(Exception):
    """The engine's queue is full; the caller should retry later (503)."""


class EngineError(Exception):
    """The engine could not start the generation (a remote backend failed); nothing was generated.

    ``message`` is safe to show a client (it never names an internal address); ``code`` and ``status_code``
    are the OpenAI-shaped error's.
    """

    def __init__(self, message: str, *, status_code: int = 502, code: str = "upstream_error", retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.retry_after = retry_after


class TokenHandle(Protocol):
    """One running generation as token ids (implemented by the scheduler's GenerationHandle)."""

    finish_reason: str | None
    completion_tokens: int
    # With params.logprobs: one inference.logprobs.TokenLogprob per emitted token, there before the token is.
    logprobs: list

    def __iter__(self) -> Iterator[int]: ...

    def cancel(self) -> None: ...


class TextStream:
    """A running generation as text pieces, released as tokens are generated.

    Iterating yields non-empty strings. Afterwards ``finish_reason`` is "stop" (end of sequence or a stop
    string), "length", "cancelled", "timeout" or "error", and ``completion_tokens`` counts what the model
    generated. ``cancel()`` (or closing the iterator) stops the sequence within a step.
    """

    def __init__(self, handle: TokenHandle, *, decode, stop: Sequence[str],
                 token_bytes: Callable[[int], bytes] | None = None):
        self._handle = handle
        self._decoder = IncrementalDecoder(decode)
        self._stops = StopMatcher(stop)
        self.finish_reason: str | None = None
        # Filled as tokens arrive when the request asked for logprobs (token_bytes given), else None.
        self.logprob_entries: list[LogprobEntry] | None = [] if token_bytes is not None else None
        self._token_bytes = token_bytes
        self._decoded_chars = 0
        self._tokens_seen = 0

    @property
    def completion_tokens(self) -> int:
        return self._handle.completion_tokens

    def cancel(self) -> None:
        self._handle.cancel()

    def __iter__(self) -> Iterator[str]:
        try:
            for token_id in self._handle:
                decoded = self._decoder.push(token_id)
                if self.logprob_entries is not None:
                    self._note_logprob(decoded)
                text, stopped = self._stops.push(decoded)
                if text:
                    yield text
                if stopped:
                    self._handle.cancel()
                    self.finish_reason = "stop"
                    return
            tail = self._stops.flush()
            if tail:
                yield tail
            self.finish_reason = self._handle.finish_reason or "stop"
        finally:
            if self.finish_reason is None:  # the consumer went away mid-stream
                self._handle.cancel()
                self.finish_reason = "cancelled"

    def _note_logprob(self, decoded: str) -> None:
        index, self._tokens_seen = self._tokens_seen, self._tokens_seen + 1
        start, self._decoded_chars = self._decoded_chars, self._decoded_chars + len(decoded)
        logprobs = getattr(self._handle, "logprobs", None) or []
        if index < len(logprobs):
            entry = logprobs[index]
            self.logprob_entries.append(from_token_ids(entry.token_id, entry.logprob, entry.top,
                                                       token_bytes=self._token_bytes, start=start,
                                                       end=self._decoded_chars))


class Engine(ABC):
    """What the tasks need from a model."""

    model_id: str
    context_window: int
    # A local engine enforces grammars itself (forced tool calls, response_format); a remote one forwards them.
    constrains_locally = True

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def encode_chat(self, messages: list[dict]) -> list[int]:
        """Token ids of the chat template applied to ``messages``, ready for the assistant's reply."""

    @abstractmethod
    def decode(self, token_ids: Sequence[int]) -> str: ...

    @abstractmethod
    def submit(self, prompt_ids: list[int], params: SamplingParams, *, deadline: float | None,
               share: Share | None = None) -> TokenHandle:
        """Start generating for ``share``'s account; raise EngineBusy when no more work can be queued, and
        ``inference.fair_queue.AccountLimitExceeded`` when that account has all it may running and waiting."""

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (logprobs report them)."""
        return self.decode([token_id]).encode("utf-8")

    def stream(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        *,
        deadline: float | None = None,
        messages: list[dict] | None = None,
        prompt: str | None = None,
        share: Share | None = None,
    ) -> TextStream:
        """Start generating and return the text as it comes. Local engines generate from ``prompt_ids``; a remote
        one forwards the request's ``messages`` (chat) or ``prompt`` (completion) instead, and may add
        ``prompt_tokens`` (the upstream's count) to the stream it returns."""
        return TextStream(self.submit(prompt_ids, params, deadline=deadline, share=share), decode=self.decode,
                          stop=params.stop, token_bytes=self.token_bytes if params.logprobs else None)

    def stats(self) -> dict:
        return {}

    def account_stats(self) -> list:
        """Per account: running, queued and the recent share (``inference.fair_queue.AccountStats``)."""
        return []

    def generation_defaults(self) -> dict:
        """The model's own sampling defaults (its generation config, or its card's advice); see
        ``inference.sampling_defaults``."""
        return {}

    def run_exclusive(self, work: Callable[[], T]) -> T:
        """Run CPU work that would otherwise compete with this engine's forward passes (moderation's
        encoder). A local engine runs it between two of its steps; others run it at once."""
        return work()
