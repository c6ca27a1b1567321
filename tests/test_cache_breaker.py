"""The circuit breaker around the rate-limit cache: a sick cache costs one failure and one warning per outage."""

import logging

import pytest
from django.core.cache.backends.base import BaseCache

from accounts.cache_breaker import rate_limit_cache
from tests.conftest import MODEL

CHAT = "/v1/chat/completions"


class SwitchableCache(BaseCache):
    """A cache that is down while ``down`` is set: every call raises, as django-redis does for a dead Redis."""

    down = True
    calls = 0
    values: dict = {}

    def __init__(self, location, params):
        super().__init__(params)

    def _call(self):
        type(self).calls += 1
        if type(self).down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    def add(self, key, value, timeout=None, version=None):
        self._call()
        return self.values.setdefault(key, value) is value

    def get(self, key, default=None, version=None):
        self._call()
        return self.values.get(key, default)

    def set(self, key, value, timeout=None, version=None):
        self._call()
        self.values[key] = value

    def incr(self, key, delta=1, version=None):
        self._call()
        if key not in self.values:
            raise ValueError(f"Key {key!r} not found")
        self.values[key] += delta
        return self.values[key]

    def delete(self, key, version=None):
        self._call()
        return self.values.pop(key, None) is not None

    def clear(self):
        self.values.clear()


class Monotonic:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def switchable_cache(settings, monkeypatch):
    from django.core.cache import caches

    SwitchableCache.down, SwitchableCache.calls, SwitchableCache.values = True, 0, {}
    settings.CACHES = {"default": {"BACKEND": "tests.test_cache_breaker.SwitchableCache"}}
    settings.SLUICE_CACHE_BREAKER_OPEN_S = 5.0
    caches._settings = None  # rebuild caches from the changed settings
    monotonic = Monotonic()
    monkeypatch.setattr(rate_limit_cache, "clock", monotonic)
    yield monotonic
    del caches._settings


def chat():
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}


def breaker_logs(caplog):
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "accounts.cache_breaker"]


def test_a_dead_cache_is_tried_once_and_warned_about_once_while_the_breaker_is_open(api, switchable_cache, caplog):
    caplog.set_level(logging.INFO)
    for _ in range(10):
        response = api.post(CHAT, chat())
        assert response.status_code == 200  # rate limits fail open; the request is served
    assert SwitchableCache.calls == 1  # the first call failed and opened the breaker; the rest skipped the cache
    assert [level for level, _ in breaker_logs(caplog)] == ["WARNING"]
    assert "x-ratelimit-limit-requests" not in response


def test_after_the_open_time_one_request_probes_and_a_recovery_is_logged_once(api, switchable_cache, caplog):
    caplog.set_level(logging.INFO)
    api.post(CHAT, chat())
    switchable_cache.now += 5.1
    api.post(CHAT, chat())  # the probe fails: open again, no second warning for the same outage
    assert SwitchableCache.calls == 2
    SwitchableCache.down = False
    api.post(CHAT, chat())  # still open: skipped without trying
    assert SwitchableCache.calls == 2
    switchable_cache.now += 5.1
    response = api.post(CHAT, chat())  # the probe succeeds and closes the breaker; the limits apply again
    assert response.status_code == 200
    assert response["x-ratelimit-limit-requests"] and response["x-ratelimit-limit-tokens"]
    assert [level for level, _ in breaker_logs(caplog)] == ["WARNING", "INFO"]
    assert not rate_limit_cache.is_open


def test_while_one_request_probes_the_others_skip_the_cache(switchable_cache):
    rate_limit_cache.call(lambda: 1 / 0, fallback=None)
    switchable_cache.now += 5.1
    seen = []

    def probe():
        seen.append(rate_limit_cache.call(lambda: "second caller", fallback="skipped"))  # arrives mid-probe
        return "probe"

    assert rate_limit_cache.call(probe, fallback=None) == "probe"
    assert seen == ["skipped"]
    assert not rate_limit_cache.is_open


def test_a_counter_that_expired_between_two_calls_does_not_open_the_breaker(switchable_cache):
    SwitchableCache.down = False

    def missing():
        raise ValueError("Key not found")

    assert rate_limit_cache.call(missing, fallback="fallback") == "fallback"
    assert not rate_limit_cache.is_open
