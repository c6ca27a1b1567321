"""Log-probabilities as a response reports them: token text and bytes, placed in the generated text.

Local engines turn the scheduler's token ids into these (``from_token_ids``); a remote engine reads them from
its upstream's chunks (``from_openai``). ``start``/``end`` place the token's text in the generated text, so a
stream sends each entry with the chunk that releases its text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TokenLogprob:
    """What the scheduler records for one generated token: its id and log-probability, and the most likely
    alternatives as (id, logprob)."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Alternative:
    token: str
    bytes: tuple[int, ...]
    logprob: float

    def as_openai(self) -> dict:
        return {"token": self.token, "logprob": self.logprob, "bytes": list(self.bytes)}


@dataclass(frozen=True)
class LogprobEntry:
    token: str
    bytes: tuple[int, ...]
    logprob: float
    top: tuple[Alternative, ...] = ()
    start: int = 0
    end: int = 0

    def as_chat(self) -> dict:
        """OpenAI's ChatCompletionTokenLogprob."""
        return {"token": self.token, "logprob": self.logprob, "bytes": list(self.bytes),
                "top_logprobs": [alternative.as_openai() for alternative in self.top]}


def _alternative(token_bytes: bytes, logprob: float) -> Alternative:
    return Alternative(token_bytes.decode("utf-8", errors="replace"), tuple(token_bytes), logprob)


def from_token_ids(token_id: int, logprob: float, top: tuple[tuple[int, float], ...], *,
                   token_bytes: Callable[[int], bytes], start: int, end: int) -> LogprobEntry:
    chosen = _alternative(token_bytes(token_id), logprob)
    return LogprobEntry(chosen.token, chosen.bytes, logprob,
                        tuple(_alternative(token_bytes(i), value) for i, value in top), start, end)


def from_openai(item: dict, *, start: int) -> LogprobEntry | None:
    """One upstream ChatCompletionTokenLogprob (as JSON), placed at ``start``; None if it is not one."""
    token, logprob = item.get("token"), item.get("logprob")
    if not isinstance(token, str) or not isinstance(logprob, (int, float)):
        return None
    raw = item.get("bytes")
    raw = tuple(raw) if isinstance(raw, list) and all(isinstance(b, int) and 0 <= b < 256 for b in raw) \
        else tuple(token.encode("utf-8"))
    top = []
    for alternative in item.get("top_logprobs") or []:
        if isinstance(alternative, dict) and isinstance(alternative.get("token"), str) and \
                isinstance(alternative.get("logprob"), (int, float)):
            top.append(Alternative(alternative["token"], tuple(alternative["token"].encode("utf-8")),
                                   float(alternative["logprob"])))
    return LogprobEntry(token, raw, float(logprob), tuple(top), start, start + len(token))


@dataclass
class LogprobCursor:
    """Hands out each entry once, when the text it stands for has been released."""

    entries: list[LogprobEntry] = field(default_factory=list)
    sent: int = 0

    def take(self, released_chars: int, *, final: bool = False) -> list[LogprobEntry]:
        taken = []
        while self.sent < len(self.entries):
            entry = self.entries[self.sent]
            if entry.end > released_chars and not (final and entry.start < released_chars):
                break
            taken.append(entry)
            self.sent += 1
        return taken


def completion_logprobs(entries: list[LogprobEntry], *, offset: int = 0) -> dict:
    """The legacy completions' Logprobs object."""
    return {
        "tokens": [entry.token for entry in entries],
        "token_logprobs": [entry.logprob for entry in entries],
        "top_logprobs": [{alternative.token: alternative.logprob for alternative in entry.top} for entry in entries],
        "text_offset": [offset + entry.start for entry in entries],
    }
