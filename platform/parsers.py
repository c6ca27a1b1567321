"""The one JSON parser of the API (``DEFAULT_PARSER_CLASSES``): DRF's, refusing what the rest of the stack
cannot handle, once here rather than in every view.

- Nesting deeper than ``MAX_JSON_DEPTH``: the json module, DRF's fields and the renderer recurse once per
  level, so 10,000 levels is a RecursionError (a 500) somewhere; no request of this API needs more than a few.
- Strings (values or keys) holding a lone surrogate (``"\\ud800"``): valid JSON, not valid Unicode; the
  tokenizer and the database cannot encode them.
- Strings holding NUL (``"\\u0000"``): PostgreSQL cannot store it in a text column, so a moderation event or a
  key name with one could never be written. Refused in every request rather than altered, so a client learns
  that the text it sent is not the text that would have been judged.
"""

from __future__ import annotations

import re

from rest_framework import parsers
from rest_framework.exceptions import ParseError

from platform.errors import ApiError

MAX_JSON_DEPTH = 64
_UNENCODABLE = re.compile("[\x00\ud800-\udfff]")


def _unencodable_reason(text: str) -> str | None:
    found = _UNENCODABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character (U+0000), which is not accepted."
    return f"contains a lone surrogate (U+{ord(found.group()):04X}), which is not valid Unicode text."


def _path(parent: str, step) -> str:
    if isinstance(step, int):
        return f"{parent}[{step}]"
    return f"{parent}.{step}" if parent else str(step)


def json_body_check(data) -> None:
    """Raise a 400 for nesting over ``MAX_JSON_DEPTH`` or an unencodable string, naming where it is (the same
    dotted path the validation errors use, e.g. ``messages[0].content``). Iterative: no recursion to overflow."""
    pending = [(data, "", 1)]
    while pending:
        value, path, depth = pending.pop()
        if isinstance(value, str):
            reason = _unencodable_reason(value)
            if reason:
                raise ApiError(f"{path}: {reason}" if path else f"The body {reason}", param=path or None,
                               code="invalid_value")
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            raise ParseError(f"nested more than {MAX_JSON_DEPTH} levels deep.")
        if isinstance(value, dict):
            children = [(name if _unencodable_reason(name) else item, _path(path, name), depth + 1)
                        for name, item in value.items()]
        else:
            children = [(item, _path(path, index), depth + 1) for index, item in enumerate(value)]
        pending.extend(reversed(children))  # popped in document order: the first bad field is the one named


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"nested more than {MAX_JSON_DEPTH} levels deep.") from None
        json_body_check(data)
        return data
