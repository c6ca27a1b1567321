"""Checks streamed output before release, across chunk boundaries.

Generated text is held back until it has been checked. Each check looks at the unreleased text plus some
already released context, so a phrase split over two chunks is judged whole; the last ``hold_chars``
characters of each check (at most its last ``hold_pieces`` pieces) stay unreleased, because the next chunk
could still complete a phrase that starts there.

Checks come early and then grow apart: the first as soon as ``first_window_chars`` can be released (so the
first text reaches the client a few tokens after it is generated), each later window twice the last, up to
``max_window_chars`` (so a long answer costs a check per window, not per token). With ``hold_chars=math.inf``
nothing is released before ``finish``, which checks the whole text at once (responses that are not streamed).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable

from moderation.services import Verdict

# Released text each check sees again before the new text: enough for any phrase to be judged whole.
CONTEXT_CHARS = 48


class OutputGuard:
    def __init__(self, check: Callable[[str], Verdict], *, hold_chars: float = 16, hold_pieces: int = 4,
                 first_window_chars: int = 1, max_window_chars: int = 64,
                 on_all_allowed: Callable[[], None] | None = None):
        self._check = check
        self._on_all_allowed = on_all_allowed  # called once when a stream ends with every check allowed
        self._hold = hold_chars
        # The held tail is also at most the last hold_pieces pieces (tokens): text of short tokens (digits,
        # "2 + 2 = 4") would otherwise wait a dozen tokens for its first release.
        self._recent_pieces: collections.deque[int] = collections.deque(maxlen=max(1, hold_pieces))
        self._window = max(1, first_window_chars)
        self._max_window = max(self._window, max_window_chars)
        self._released_tail = ""
        self._pending = ""
        self.blocked = False
        self.verdicts: list[Verdict] = []

    @property
    def all_allowed(self) -> bool:
        """Every check so far let its text through unchanged."""
        return all(verdict.action == "allow" for verdict in self.verdicts)

    def push(self, piece: str) -> str:
        """Add generated text; return what may be released now (possibly "")."""
        if self.blocked:
            return ""
        self._pending += piece
        self._recent_pieces.append(len(piece))
        if math.isinf(self._hold):  # a whole response: checked once, at the end
            return ""
        keep = int(min(self._hold, sum(self._recent_pieces), len(self._pending)))
        if len(self._pending) - keep < self._window:
            return ""
        self._window = min(self._window * 2, self._max_window)
        return self._release(keep=keep)

    def finish(self) -> str:
        """The generation ended: check and release everything still held."""
        released = "" if self.blocked or not self._pending else self._release(keep=0)
        if self._on_all_allowed is not None and self.verdicts and self.all_allowed:
            self._on_all_allowed()
        return released

    def _release(self, *, keep: int) -> str:
        context = self._released_tail[-CONTEXT_CHARS:]
        verdict = self._check(context + self._pending)
        self.verdicts.append(verdict)
        if verdict.blocked:
            self.blocked = True
            self._pending = ""
            return ""
        checked = verdict.text[len(context):]  # redactions apply to the unreleased part only
        cut = len(checked) - keep
        released, self._pending = checked[:cut], checked[cut:]
        self._released_tail = (self._released_tail + released)[-CONTEXT_CHARS:]
        return released
