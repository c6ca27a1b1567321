"""A tiny OpenAI-compatible upstream in a thread, scripted by the test: what it streams, how it fails."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StubUpstream:
    """Streams ``chunks`` for /v1/chat/completions and /v1/completions, then ``usage`` (if any) and [DONE].

    ``status`` other than 200 answers an OpenAI error body instead; ``break_after`` drops the connection after
    that many chunks; ``hold`` (an Event) keeps the request waiting before its first byte until it is set;
``pause_after`` stops a stream after that many chunks (setting ``paused``) until ``resume`` is set.
    Every request (path, body, authorization header) is kept in ``requests``. A request asking for logprobs
    gets each chunk as one token of logprob -0.25.
    """

    def __init__(self, chunks=("Hello", " from", " upstream."), *, usage=None, finish_reason="stop"):
        self.chunks = list(chunks)
        self.usage = usage
        self.finish_reason = finish_reason
        self.status = 200
        self.error_message = "upstream says no"
        self.break_after: int | None = None
        self.hold: threading.Event | None = None
        self.pause_after: int | None = None
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.models_status = 200
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends when the connection closes: no chunked framing

            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(stub.models_status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps({"object": "list", "data": [{"id": "stub", "object": "model"}]}).encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"path": self.path, "body": body, "authorization": self.headers.get("Authorization")})
                if stub.hold is not None:
                    stub.hold.wait(30)
                if stub.status != 200:
                    self.send_response(stub.status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    error = {"error": {"message": stub.error_message, "type": "invalid_request_error"}}
                    self.wfile.write(json.dumps(error).encode())
                    return
                chat = self.path.endswith("/chat/completions")
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for index, text in enumerate(stub.chunks):
                    if stub.break_after is not None and index >= stub.break_after:
                        return  # the connection drops mid-stream
                    if index == stub.pause_after:
                        stub.paused.set()
                        stub.resume.wait(30)
                    choice = {"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}
                    if body.get("logprobs") not in (None, False):  # each chunk one "token" of logprob -0.25
                        choice["logprobs"] = {"content": [{"token": text, "logprob": -0.25, "bytes": list(text.encode()),
                                                           "top_logprobs": []}]} if chat else {
                            "tokens": [text], "token_logprobs": [-0.25], "top_logprobs": [{text: -0.25}]}
                    self._event({"object": "chunk", "choices": [{**choice, "finish_reason": None}]})
                final = {"index": 0, "delta": {}} if chat else {"index": 0, "text": ""}
                self._event({"object": "chunk", "choices": [{**final, "finish_reason": stub.finish_reason}]})
                if stub.usage is not None:
                    self._event({"object": "chunk", "choices": [], "usage": stub.usage})
                self.wfile.write(b"data: [DONE]\n\n")

            def _event(self, payload):
                self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> "StubUpstream":
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.resume.set()
        self._server.shutdown()
        self._server.server_close()


def wait_until(condition, timeout: float = 5.0) -> bool:
    """Poll ``condition`` (bounded) until it holds; for conditions reached by other threads."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()
