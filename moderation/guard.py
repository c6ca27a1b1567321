"""Checks streamed output before release, across chunk boundaries.

Generated text is held back until it has been checked. Each check looks at the unreleased text plus some
already released context, so a phrase split over two chunks is judged whole; the last ``hold_chars`` of
each check stay unreleased, because the next chunk could still complete a phrase that starts there.
"""

from __future__ import annotations

from collections.abc import Callable

from moderation.services import Verdict

CONTEXT_CHARS = 200


class OutputGuard:
    def __init__(self, check: Callable[[str], Verdict], *, hold_chars: int = 32, check_every_chars: int = 32):
        self._check = check
        self._hold = hold_chars
        self._every = check_every_chars
        self._released_tail = ""
        self._pending = ""
        self.blocked = False
        self.verdicts: list[Verdict] = []

    def push(self, piece: str) -> str:
        """Add generated text; return what may be released now (possibly "")."""
        if self.blocked:
            return ""
        self._pending += piece
        if len(self._pending) < self._hold + self._every:
            return ""
        return self._release(keep=self._hold)

    def finish(self) -> str:
        """The generation ended: check and release everything still held."""
        if self.blocked or not self._pending:
            return ""
        return self._release(keep=0)

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
