"""Server-Sent Events, as OpenAI streams them: ``data: {json}\\n\\n`` chunks, then ``data: [DONE]``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from django.http import StreamingHttpResponse


def sse_event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def sse_response(events: Iterable[bytes], *, headers: dict[str, str]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(events, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # tell nginx not to buffer the stream
    for name, value in headers.items():
        response[name] = value
    return response


def sse_chunks(payloads: Iterator[dict]) -> Iterator[bytes]:
    for payload in payloads:
        yield sse_event(payload)
    yield SSE_DONE
