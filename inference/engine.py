"""The engine interface and the process-wide engine singleton.

An engine owns one model: it tokenizes, applies the chat template and generates. Local engines
(transformers) and, later, remote ones (an upstream OpenAI-compatible server) implement the same small
interface, so views and services never know which one they talk to.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

from django.conf import settings

from inference.detokenize import IncrementalDecoder, StopMatcher
from inference.sampling import SamplingParams
from moderation.model_loading import model_loading_lock

logger = logging.getLogger(__name__)

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

    def __iter__(self) -> Iterator[int]: ...

    def cancel(self) -> None: ...


class TextStream:
    """A running generation as text pieces, released as tokens are generated.

    Iterating yields non-empty strings. Afterwards ``finish_reason`` is "stop" (end of sequence or a stop
    string), "length", "cancelled", "timeout" or "error", and ``completion_tokens`` counts what the model
    generated. ``cancel()`` (or closing the iterator) stops the sequence within a step.
    """

    def __init__(self, handle: TokenHandle, *, decode, stop: Sequence[str]):
        self._handle = handle
        self._decoder = IncrementalDecoder(decode)
        self._stops = StopMatcher(stop)
        self.finish_reason: str | None = None

    @property
    def completion_tokens(self) -> int:
        return self._handle.completion_tokens

    def cancel(self) -> None:
        self._handle.cancel()

    def __iter__(self) -> Iterator[str]:
        try:
            for token_id in self._handle:
                text, stopped = self._stops.push(self._decoder.push(token_id))
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


class Engine(ABC):
    """What the tasks need from a model."""

    model_id: str
    context_window: int

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def encode_chat(self, messages: list[dict]) -> list[int]:
        """Token ids of the chat template applied to ``messages``, ready for the assistant's reply."""

    @abstractmethod
    def decode(self, token_ids: Sequence[int]) -> str: ...

    @abstractmethod
    def submit(self, prompt_ids: list[int], params: SamplingParams, *, deadline: float | None) -> TokenHandle:
        """Start generating; raise EngineBusy when no more work can be queued."""

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def stream(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        *,
        deadline: float | None = None,
        messages: list[dict] | None = None,
        prompt: str | None = None,
    ) -> TextStream:
        """Start generating and return the text as it comes. Local engines generate from ``prompt_ids``; a remote
        one forwards the request's ``messages`` (chat) or ``prompt`` (completion) instead, and may add
        ``prompt_tokens`` (the upstream's count) to the stream it returns."""
        return TextStream(self.submit(prompt_ids, params, deadline=deadline), decode=self.decode, stop=params.stop)

    def stats(self) -> dict:
        return {}

    def generation_defaults(self) -> dict:
        """The model's own sampling defaults (its generation config, or its card's advice); see
        ``inference.sampling_defaults``."""
        return {}

    def run_exclusive(self, work: Callable[[], T]) -> T:
        """Run CPU work that would otherwise compete with this engine's forward passes (moderation's
        encoder). A local engine runs it between two of its steps; others run it at once."""
        return work()


_engine: Engine | None = None
_engine_lock = threading.Lock()
_engine_error: str | None = None


def _build_engine() -> Engine:
    if not settings.SLUICE_LOCAL_MODEL:
        raise RuntimeError("This worker serves no local model (SLUICE_LOCAL_MODEL=0)")
    if settings.SLUICE_ENGINE == "fake":
        from inference.fake_engine import FakeEngine

        # A server's fake engine keeps no history: a soak would otherwise measure its lists growing.
        return FakeEngine(token_delay_s=settings.SLUICE_FAKE_TOKEN_DELAY_S, remember=False)
    if settings.SLUICE_ENGINE == "transformers":
        from inference.transformers_engine import TransformersEngine

        return TransformersEngine.from_settings()
    raise RuntimeError(f"Unknown SLUICE_ENGINE {settings.SLUICE_ENGINE!r}")


def get_engine() -> Engine:
    """The process-wide engine, loaded on first use; concurrent first callers load it once."""
    global _engine, _engine_error
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                started = time.monotonic()
                try:
                    with model_loading_lock:  # never beside another model's from_pretrained
                        _engine = _build_engine()
                except Exception as error:
                    _engine_error = f"{type(error).__name__}: {error}"
                    raise
                logger.info("Engine %s ready in %.1f s", _engine.model_id, time.monotonic() - started)
    return _engine


def engine_if_loaded() -> Engine | None:
    return _engine


def engine_status() -> str:
    if _engine is not None:
        return "ready"
    if _engine_lock.locked():
        return "loading"
    return f"failed: {_engine_error}" if _engine_error else "not loaded"


def set_engine(engine: Engine | None) -> None:
    """Install an engine (tests, the benchmark) or forget the current one."""
    global _engine
    with _engine_lock:
        _engine = engine


def warm_up_in_background() -> threading.Thread:
    """Start loading the engine without blocking (server start); /readyz turns true when done."""

    def load():
        from inference.registry import remote_engines_start

        try:
            if settings.SLUICE_LOCAL_MODEL:
                get_engine()
            remote_engines_start()  # their clients and health probes; remote models load nothing
        except Exception:
            logger.exception("Engine failed to load")

    from inference.task_models import task_models_load_in_background, task_models_status
    from moderation.detectors import detectors_load_in_background, detectors_status

    # transformers resolves its top-level names lazily, and two threads resolving them at once can fail
    # ("cannot import name 'AutoModelForCausalLM'": seen when the task models and the generator loaded together),
    # so the names the loaders use are resolved here, in this one thread, before any of them starts.
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, DynamicCache  # noqa: F401

    if detectors_status() == "not loaded":
        detectors_load_in_background()  # at the same time as the model: ready in the longest of the three
    if settings.SLUICE_LOCAL_MODEL and task_models_status() == "not loaded":
        task_models_load_in_background()  # the task endpoints, like the local model, only where it is served
    thread = threading.Thread(target=load, name="engine-warm-up", daemon=True)
    thread.start()
    return thread
