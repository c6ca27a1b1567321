"""What a real gunicorn server (two workers) answers at the HTTP edges, read off a raw keep-alive socket:
a refused body closes the connection it says it closes, gunicorn's own refusals speak the API's JSON error
format, and the sign-in throttle holds across the workers."""

from __future__ import annotations

import json
import re
import socket

import httpx
import pytest

from tests.servers import Server, manage, server_env

pytestmark = pytest.mark.server

PASSWORD = "gunicorn-http-test-password"
FAILURE_LIMIT = 5
BODY_LIMIT = 65_536 * 2


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gunicorn_http")
    env = server_env(
        DATABASE_URL=f"sqlite:///{folder / 'db.sqlite3'}", CACHE_URL="locmem://", SLUICE_ENGINE="fake",
        SLUICE_VAR_DIR=str(folder / "var"), DJANGO_SUPERUSER_PASSWORD=PASSWORD,
        SLUICE_MAX_BODY_BYTES=str(BODY_LIMIT), SLUICE_LOGIN_FAILURE_LIMIT=str(FAILURE_LIMIT),
    )
    manage(env, "migrate", "--noinput")
    manage(env, "createsuperuser", "--noinput", "--username", "operator", "--email", "ops@example.com")
    key = manage(env, "create_api_key", "--account", "edges").strip().splitlines()[-1]
    running = Server(env, workers=2, log_path=folder / "server.log").start(timeout=240)
    yield running, key
    running.stop()


class Connection:
    """One keep-alive HTTP/1.1 connection, read exactly as the server frames it."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        self.buffer = b""

    def send(self, head: str, body: bytes = b"") -> None:
        self.sock.sendall(head.encode("latin-1") + body)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError("closed before a response")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            if not self._fill():
                raise ConnectionError("closed mid-body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    def closed_by_server(self) -> bool:
        try:
            return not self._fill()
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def request_head(method: str, path: str, *, key: str = "", length: int | None = None, extra: str = "") -> str:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n"
    if key:
        head += f"Authorization: Bearer {key}\r\n"
    if length is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
    return head + extra + "\r\n"


def test_a_keep_alive_connection_serves_request_after_request(server):
    running, key = server
    connection = Connection(running.url)
    for _ in range(3):
        connection.send(request_head("GET", "/v1/models", key=key))
        status, headers, _ = connection.response()
        assert status == 200 and headers["connection"] == "keep-alive"
    connection.close()


def test_an_oversized_body_is_a_413_that_says_connection_close_and_closes(server):
    running, key = server
    body = json.dumps({"model": "SmolLM2-135M-Instruct", "prompt": "x" * (BODY_LIMIT * 4)}).encode()
    connection = Connection(running.url)
    connection.send(request_head("POST", "/v1/completions", key=key, length=len(body)), body)
    status, headers, answer = connection.response()

    assert status == 413
    assert json.loads(answer)["error"]["code"] == "request_too_large"
    assert headers["connection"] == "close"  # it was "keep-alive", and the next request then failed
    assert connection.closed_by_server()
    connection.close()

    # What an HTTP client with a connection pool sees: the next request goes out on a new connection and works.
    with httpx.Client(base_url=running.url, headers={"Authorization": f"Bearer {key}"}) as client:
        assert client.post("/v1/completions", content=body, headers={"Content-Type": "application/json"}).status_code == 413
        assert client.get("/v1/models").status_code == 200


def test_a_body_within_the_limit_keeps_the_connection_alive(server):
    running, key = server
    # Larger than the 64 KiB gunicorn drains on its own, within the limit: the application reads it all.
    body = json.dumps({"model": "SmolLM2-135M-Instruct", "prompt": "hello", "max_tokens": 2}).encode() + b" " * 100_000
    assert 65_536 < len(body) < BODY_LIMIT
    connection = Connection(running.url)
    connection.send(request_head("POST", "/v1/completions", key=key, length=len(body)), body)
    status, headers, _ = connection.response()
    assert status == 200 and headers["connection"] == "keep-alive"
    connection.send(request_head("GET", "/v1/models", key=key))
    assert connection.response()[0] == 200
    connection.close()


def test_a_body_within_the_limit_answered_unread_keeps_the_connection_alive(server):
    running, _ = server
    # No key: a 401 before the body is parsed. Larger than the 64 KiB gunicorn reads past an unread body.
    body = b'{"model": "SmolLM2-135M-Instruct", "prompt": "hello"}' + b" " * 100_000
    connection = Connection(running.url)
    connection.send(request_head("POST", "/v1/completions", key="sk-wrong", length=len(body)), body)
    status, headers, _ = connection.response()
    assert status == 401 and headers["connection"] == "keep-alive"
    connection.send(request_head("GET", "/healthz"))
    assert connection.response()[0] == 200  # the connection it said it kept is really kept
    connection.close()


def test_a_request_line_too_long_is_a_414_in_the_json_error_format(server):
    running, _ = server
    connection = Connection(running.url)
    connection.send(request_head("GET", "/v1/models?q=" + "a" * 5000))
    status, headers, body = connection.response()

    assert status == 414
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "request_line_too_long"
    assert set(error) == {"message", "type", "param", "code"}
    assert headers["content-security-policy"].startswith("default-src 'none'")
    assert headers["connection"] == "close" and connection.closed_by_server()


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param("X-Big: " + "b" * 9000 + "\r\n", id="one-header-too-large"),
        pytest.param("".join(f"X-Many-{n}: v\r\n" for n in range(120)), id="too-many-headers"),
    ],
)
def test_headers_too_many_or_too_large_are_a_431_in_the_json_error_format(server, headers):
    running, _ = server
    connection = Connection(running.url)
    connection.send(request_head("GET", "/healthz", extra=headers))
    status, answer_headers, body = connection.response()

    assert status == 431
    assert answer_headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "request_headers_too_large"


def sign_in(url: str, password: str) -> httpx.Response:
    """The admin's login form as a browser submits it: a fresh connection, its CSRF cookie and token."""
    with httpx.Client(base_url=url) as client:
        form = client.get("/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
        return client.post(
            "/admin/login/?next=/admin/",
            data={"csrfmiddlewaretoken": token, "username": "operator", "password": password},
        )


def test_the_sign_in_throttle_locks_out_across_both_workers(server):
    running, _ = server
    answers = [sign_in(running.url, f"wrong-{n}").status_code for n in range(FAILURE_LIMIT)]
    assert answers == [200] * (FAILURE_LIMIT - 1) + [429]

    refused = sign_in(running.url, PASSWORD)
    assert refused.status_code == 429
    assert "Too many failed sign-ins" in refused.text
    assert "script-src 'self'" in refused.headers["content-security-policy"]
