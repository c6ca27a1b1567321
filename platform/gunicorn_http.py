"""Two changes to gunicorn's HTTP handling, installed by gunicorn.conf.py.

1. A request whose body the application will not read says ``Connection: close``. Django refuses a body over
DATA_UPLOAD_MAX_MEMORY_SIZE (413) without reading it, and a chunked one it never reads; gunicorn then drains
at most 64 KiB of what is left before the next request and closes the connection when there is more, yet it
had already answered ``Connection: keep-alive``, so a client's next request on that connection failed.
``close_when_body_is_left_unread`` (the ``pre_request`` hook) marks such a request to close before any byte
of the answer is written: the answer says ``Connection: close`` and the client opens a new connection.

A body within the limit that the application answers without reading (a 401 before the JSON is parsed)
is read to its end after the answer by ``read_what_is_left_of_the_body`` (the ``post_request`` hook): at
most SLUICE_MAX_BODY_BYTES, which the application could have read anyway, so the connection truly stays
alive instead of closing after gunicorn's 64 KiB.

2. Gunicorn's own error answers (request line too long: 414, headers too many or too large: 431, a malformed
request: 400) in the API's one error format instead of gunicorn's HTML page.

Gunicorn refuses such requests before any application code runs: ``Worker.handle_error`` maps the parser's
exception to a status and a message and hands them to ``gunicorn.util.write_error``, its one function that
writes the bytes, with no setting or hook to change them. gunicorn.conf.py puts ``write_json_error`` in its
place: gunicorn still decides which requests to refuse and with what status; only the body changes. It
uses no Django: it runs in gunicorn's parser, outside any request.
"""

from __future__ import annotations

import json

from gunicorn import util

_CODES = {
    400: ("invalid_request_error", "invalid_request"),
    403: ("invalid_request_error", "forbidden"),
    414: ("invalid_request_error", "request_line_too_long"),
    417: ("invalid_request_error", "expectation_failed"),
    431: ("invalid_request_error", "request_headers_too_large"),
    501: ("invalid_request_error", "not_implemented"),
}


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """Same arguments as ``gunicorn.util.write_error``; writes ``{"error": {...}}`` and closes the exchange."""
    error_type, code = _CODES.get(status_int, ("server_error", "server_error"))
    message = f"{reason}: {mesg}" if mesg else reason
    body = json.dumps({"error": {"message": message, "type": error_type, "param": None, "code": code}}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "Content-Security-Policy: default-src 'none'; frame-ancestors 'none'\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def close_when_body_is_left_unread(worker, req) -> None:
    """gunicorn's ``pre_request`` hook: a body larger than Django reads, or chunked, closes the connection."""
    from django.conf import settings

    headers = dict(req.headers)  # gunicorn upper-cases the names; duplicates were refused by its parser
    if "chunked" in headers.get("TRANSFER-ENCODING", "").lower():
        req.force_close()
        return
    length = headers.get("CONTENT-LENGTH", "")
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if length.isdigit() and limit is not None and int(length) > limit:
        req.force_close()


def read_what_is_left_of_the_body(worker, req, environ, resp) -> None:
    """gunicorn's ``post_request`` hook: finish reading a body the application left, so keep-alive holds."""
    if req.should_close() or resp is None or resp.should_close():
        return  # closing anyway (and an over-limit body is never read: pre_request marked it to close)
    try:
        while req.body.read(65_536):
            pass
    except (OSError, ValueError):
        pass  # gunicorn's own drain then finds the body unfinished and closes the connection


def install() -> None:
    util.write_error = write_json_error
