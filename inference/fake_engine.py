"""An engine without a model, for tests and the platform-overhead benchmark.

One token per character (so token counts are easy to predict), a readable chat template, and replies taken
from a queue (``engine.replies.append("...")``), like simonw/llm's fake model. ``gate`` lets a test hold a
generation after N tokens to observe streaming and disconnects deterministically.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence

from inference.engine import Engine, EngineBusy
from inference.sampling import SamplingParams

EOS = 0


class FakeHandle:
    def __init__(self, reply: str, params: SamplingParams, gate: "Gate | None"):
        ids = [ord(char) for char in reply]
        if params.ignore_eos or len(ids) < params.min_tokens:
            while len(ids) < params.max_tokens:
                ids.extend(ord(char) for char in (reply or "x"))
        self._ids = ids[: params.max_tokens]
        self._ended_by_eos = len(ids) <= params.max_tokens and not params.ignore_eos
        self._gate = gate
        self._cancelled = threading.Event()
        self.finish_reason: str | None = None
        self.completion_tokens = 0

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def __iter__(self) -> Iterator[int]:
        for token_id in self._ids:
            if self._gate is not None:
                self._gate.wait_turn(self.completion_tokens, self._cancelled)
            if self._cancelled.is_set():
                self.finish_reason = "cancelled"
                return
            self.completion_tokens += 1
            yield token_id
        self.finish_reason = "stop" if self._ended_by_eos else "length"


class Gate:
    """Holds every generation before token ``after`` until ``release()`` (or until cancelled)."""

    def __init__(self, after: int):
        self.after = after
        self.reached = threading.Event()
        self._open = threading.Event()

    def release(self) -> None:
        self._open.set()

    def wait_turn(self, produced: int, cancelled: threading.Event) -> None:
        if produced >= self.after and not self._open.is_set():
            self.reached.set()
            while not self._open.wait(0.01) and not cancelled.is_set():
                pass


class FakeEngine(Engine):
    model_id = "SmolLM2-135M-Instruct"
    context_window = 8192
    default_reply = "Hello from the fake engine."

    def __init__(self, *, model_id: str | None = None, max_running: int | None = None):
        if model_id:
            self.model_id = model_id
        self.replies: deque[str] = deque()
        self.gate: Gate | None = None
        self.submitted: list[tuple[list[int], SamplingParams]] = []
        self.handles: list[FakeHandle] = []
        self.max_running = max_running

    def encode(self, text: str) -> list[int]:
        return [ord(char) for char in text]

    def encode_chat(self, messages: list[dict]) -> list[int]:
        prompt = "".join(f"<{message['role']}>{message['content']}\n" for message in messages) + "<assistant>"
        return self.encode(prompt)

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(token_id) for token_id in token_ids if token_id != EOS)

    def submit(self, prompt_ids, params, *, deadline=None) -> FakeHandle:
        running = sum(1 for handle in self.handles if handle.finish_reason is None and not handle.cancelled)
        if self.max_running is not None and running >= self.max_running:
            raise EngineBusy("The fake engine is full.")
        reply = self.replies.popleft() if self.replies else self.default_reply
        handle = FakeHandle(reply, params, self.gate)
        self.submitted.append((list(prompt_ids), params))
        self.handles.append(handle)
        return handle
