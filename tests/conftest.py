"""Personas and engines for the tests.

Every test runs on a fake engine unless it asks for ``real_engine`` (marked ``model``), which loads the
packaged model once per session.
"""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from accounts.services import account_get_or_create, key_create  # noqa: E402
from inference.engines.factory import set_engine  # noqa: E402
from inference.engines.fake import FakeEngine  # noqa: E402

MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(autouse=True)
def fake_engine():
    engine = FakeEngine(model_id=MODEL)
    set_engine(engine)
    yield engine
    set_engine(None)


@pytest.fixture(autouse=True)
def fresh_process_state(settings):
    """Per-process state that must not leak between tests: cached keys, policies and detections,
    unwritten moderation counts, remote engines built from settings.

    Tests change keys and accounts mid-test and expect the next request to see it, so the key cache is off
    unless a test turns it on (tests/test_key_cache.py)."""
    from accounts.key_cache import key_cache_clear
    from inference.registry import remote_engines_reset
    from moderation import allowed_counts
    from moderation.detectors import recent_detections
    from moderation.policies import policy_cache_clear

    settings.SLUICE_KEY_CACHE_S = 0
    settings.SLUICE_MODERATION_COUNT_FLUSH_S = 0  # written at once; tests/test_moderation.py tests the buffering
    key_cache_clear()
    policy_cache_clear()  # a rolled-back policy sends no signal
    allowed_counts.discard()
    recent_detections().clear()
    yield
    key_cache_clear()
    policy_cache_clear()
    allowed_counts.discard()
    recent_detections().clear()
    remote_engines_reset()


@pytest.fixture(autouse=True)
def fresh_cache():
    from django.core.cache import cache

    from accounts.cache_breaker import rate_limit_cache

    rate_limit_cache.reset()  # a test that broke the cache must not leave the next one skipping it
    cache.clear()
    yield
    cache.clear()
    rate_limit_cache.reset()


@pytest.fixture(scope="session")
def real_model_engine():
    """The real packaged model behind the real engine, loaded once per session."""
    from inference.engines.transformers_engine import TransformersEngine

    return TransformersEngine.from_settings()


@pytest.fixture
def real_engine(real_model_engine):
    set_engine(real_model_engine)
    yield real_model_engine


@pytest.fixture
def account(db):
    return account_get_or_create(name="acme")


@pytest.fixture
def api_key(account):
    """The plaintext of a key with every scope (what a paying user holds)."""
    return key_create(account=account, name="main").plaintext


class Api:
    """A client that speaks JSON to the API with a bearer key, through the real middleware stack."""

    def __init__(self, client, key: str | None):
        self.client = client
        self.key = key

    def _headers(self, extra):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {self.key}"} if self.key else {}
        headers.update(extra)
        return headers

    def post(self, path, body=None, *, raw: bytes | None = None, **extra):
        data = raw if raw is not None else json.dumps(body if body is not None else {})
        return self.client.post(path, data=data, content_type="application/json", **self._headers(extra))

    def patch(self, path, body, **extra):
        return self.client.patch(path, data=json.dumps(body), content_type="application/json", **self._headers(extra))

    def get(self, path, **extra):
        return self.client.get(path, **self._headers(extra))


@pytest.fixture
def api(client, api_key):
    return Api(client, api_key)


@pytest.fixture
def anonymous(client):
    return Api(client, None)


def sse_payloads(response) -> list:
    """The JSON payloads of an SSE response, and the final "[DONE]" marker as a string."""
    body = b"".join(response.streaming_content).decode()
    events = [line[len("data: ") :] for line in body.split("\n\n") if line.startswith("data: ")]
    return [event if event == "[DONE]" else json.loads(event) for event in events]


class MovableClock:
    """One injected clock for accounts (``accounts.clock.now``) and django-ratelimit's windows."""

    def __init__(self, start):
        self.current = start

    def now(self):
        return self.current

    def time(self) -> float:
        return self.current.timestamp()

    def advance(self, **delta):
        from datetime import timedelta

        self.current += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch):
    import types
    from datetime import datetime, timezone

    import django_ratelimit.core

    from accounts import clock as accounts_clock

    moving = MovableClock(datetime(2026, 3, 31, 23, 58, 30, tzinfo=timezone.utc))
    monkeypatch.setattr(accounts_clock, "now", moving.now)
    monkeypatch.setattr(django_ratelimit.core, "time", types.SimpleNamespace(time=moving.time))
    return moving


def disconnect_client(response) -> None:
    """Close a streamed response mid-way, as the server does when the client goes away.

    Closing ends the request, and Django then closes the database connection; in tests that connection holds
    the test's transaction, so keep it open (as the test client does for responses read to the end)."""
    from unittest import mock

    from django.db import connections

    with mock.patch.object(connections["default"], "close_if_unusable_or_obsolete"):
        response.close()
