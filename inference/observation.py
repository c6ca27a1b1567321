"""What one request did, gathered while it runs, for its metrics and its log line.

``platform.observability`` opens an Observation when a request arrives and reports it when the last byte is
sent (for a stream, when the stream ends). Services deeper down fill in what only they know (the model, the
tokens, when the first text was released) through ``observation_current()``, without knowing the request.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field


@dataclass
class Observation:
    started: float = field(default_factory=time.monotonic)
    model: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = ""
    first_token_at: float | None = None
    upstream: str = ""

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()

    @property
    def ttft_seconds(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started


_current: contextvars.ContextVar[Observation | None] = contextvars.ContextVar("sluice_observation", default=None)


def observation_begin() -> Observation:
    observation = Observation()
    _current.set(observation)
    return observation


def observation_current() -> Observation:
    """The running request's Observation; a throwaway one outside a request (commands, tests of services)."""
    return _current.get() or Observation()
