"""An engine without a model, for tests and the platform-overhead benchmark.

One token per character (so token counts are easy to predict), a readable chat template, and replies taken
from a queue (``engine.replies.append("...")``), like simonw/llm's fake model. Tokens are produced as the
consumer iterates, so a test that stops reading mid-stream sees exactly what was generated so far.
``token_delay_s`` paces the tokens as a model would (a browser test watches a reply arrive in pieces).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence

from inference.engines.base import Engine, EngineBusy
from inference.logprob_entries import TokenLogprob
from inference.sampling import SamplingParams

EOS = 0


class FakeHandle:
    def __init__(self, reply: str, params: SamplingParams, *, token_delay_s: float = 0.0):
        self.token_delay_s = token_delay_s
        ids = [ord(char) for char in reply]
        if params.ignore_eos or len(ids) < params.min_tokens:
            while len(ids) < params.max_tokens:
                ids.extend(ord(char) for char in (reply or "x"))
        self._ids = ids[: params.max_tokens]
        self._ended_by_eos = len(ids) <= params.max_tokens and not params.ignore_eos
        self._cancelled = threading.Event()
        self.finish_reason: str | None = None
        self.completion_tokens = 0
        # Asked for logprobs: each token is given probability 1/2, its alternatives 1/4, 1/8, ... (the next
        # characters), so a test can check the shapes and which token each entry belongs to.
        self._top_logprobs = params.top_logprobs if params.logprobs else None
        self.logprobs: list = []

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def __iter__(self) -> Iterator[int]:
        for token_id in self._ids:
            if self._cancelled.is_set():
                self.finish_reason = "cancelled"
                return
            if self.token_delay_s:
                time.sleep(self.token_delay_s)  # a slow model, for servers under test (SLUICE_FAKE_TOKEN_DELAY_S)
            self.completion_tokens += 1
            if self._top_logprobs is not None:
                self.logprobs.append(TokenLogprob(token_id, -math.log(2), tuple(
                    (token_id + k, -(k + 1) * math.log(2)) for k in range(self._top_logprobs))))
            yield token_id
        self.finish_reason = "stop" if self._ended_by_eos else "length"


class FakeEngine(Engine):
    model_id = "SmolLM2-135M-Instruct"
    context_window = 8192
    default_reply = "Hello from the fake engine."

    def __init__(self, *, model_id: str | None = None, max_running: int | None = None, token_delay_s: float = 0.0,
                 remember: bool = True):
        self.token_delay_s = token_delay_s
        self.remember = remember  # keep every request for a test to inspect; a server's fake engine does not
        if model_id:
            self.model_id = model_id
        self.replies: deque[str] = deque()
        self.submitted: list[tuple[list[int], SamplingParams]] = []
        self.handles: list[FakeHandle] = []
        self.shares: list = []  # the account each request ran for (inference.fair_queue.Share)
        self.max_running = max_running
        self.own_defaults: dict = {}  # what a real model's generation config would say

    def generation_defaults(self) -> dict:
        return self.own_defaults

    def encode(self, text: str) -> list[int]:
        return [ord(char) for char in text]

    def encode_chat(self, messages: list[dict]) -> list[int]:
        prompt = "".join(f"<{message['role']}>{message['content']}\n" for message in messages) + "<assistant>"
        return self.encode(prompt)

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(token_id) for token_id in token_ids if token_id != EOS)

    def submit(self, prompt_ids, params, *, deadline=None, share=None) -> FakeHandle:
        running = sum(1 for handle in self.handles if handle.finish_reason is None and not handle.cancelled)
        if self.max_running is not None and running >= self.max_running:
            raise EngineBusy("The fake engine is full.")
        reply = self.replies.popleft() if self.replies else self.default_reply
        handle = FakeHandle(reply, params, token_delay_s=self.token_delay_s)
        if self.remember:
            self.submitted.append((list(prompt_ids), params))
            self.shares.append(share)
            self.handles.append(handle)
        return handle
