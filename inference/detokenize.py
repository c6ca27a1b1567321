"""Turn a stream of token ids into text pieces: valid UTF-8 across token boundaries, stop strings honoured.

A byte-level BPE token may end in the middle of a multi-byte character, so a piece is released only when
its decoding no longer ends in U+FFFD. Text that could be the beginning of a stop string is held back until
it is either completed (the stream stops before it) or ruled out (it is released).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


class IncrementalDecoder:
    """Decodes a growing list of ids into newly completed text, the way vLLM and TGI do (prefix offsets)."""

    def __init__(self, decode: Callable[[Sequence[int]], str]):
        self._decode = decode
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._ids[self._prefix_offset :])
        if len(full_text) > len(prefix_text) and not full_text.endswith("\ufffd"):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return full_text[len(prefix_text) :]
        return ""


class StopMatcher:
    """Feeds text through; returns what is safe to release and whether a stop string was reached."""

    def __init__(self, stops: Sequence[str]):
        self._stops = [stop for stop in stops if stop]
        self._held = ""

    def push(self, text: str) -> tuple[str, bool]:
        buffer = self._held + text
        if not self._stops:
            self._held = ""
            return buffer, False
        first = min((index for stop in self._stops if (index := buffer.find(stop)) != -1), default=-1)
        if first != -1:
            self._held = ""
            return buffer[:first], True
        keep = self._longest_stop_prefix_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    def _longest_stop_prefix_suffix(self, buffer: str) -> int:
        longest = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:length]):
                    longest = length
                    break
        return longest
