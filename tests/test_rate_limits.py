"""Per-key requests and tokens per minute, on the shared cache, with an injected clock."""

import pytest

from accounts.models import ApiKey, UsageRecord
from tests.conftest import MODEL, Api

CHAT = "/v1/chat/completions"


def chat(max_tokens=10):
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": max_tokens}


@pytest.fixture
def limited(account):
    account.requests_per_minute = 3
    account.tokens_per_minute = 1000
    account.save()
    return account


def test_every_keyed_response_carries_the_rate_limit_headers(api, limited, clock):
    response = api.get("/v1/models")
    for name in ("requests", "tokens"):
        for field in ("limit", "remaining", "reset"):
            assert f"x-ratelimit-{field}-{name}" in response, f"missing x-ratelimit-{field}-{name}"
    assert response["x-ratelimit-limit-requests"] == "3"
    assert response["x-ratelimit-remaining-requests"] == "2"
    assert response["x-ratelimit-reset-requests"].endswith("s")


def test_requests_past_the_limit_get_429_with_retry_after_until_the_window_resets(api, limited, clock):
    for _ in range(3):
        assert api.post(CHAT, chat()).status_code == 200
    refused = api.post(CHAT, chat())
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert int(refused["Retry-After"]) >= 1
    assert refused["x-ratelimit-remaining-requests"] == "0"
    assert UsageRecord.objects.filter(status_code=429).count() == 1
    clock.advance(seconds=61)
    assert api.post(CHAT, chat()).status_code == 200


def test_a_second_key_is_not_affected(api, limited, client, clock):
    from accounts.services import key_create

    for _ in range(4):
        api.post(CHAT, chat())
    other = Api(client, key_create(account=limited, name="other").plaintext)
    assert other.post(CHAT, chat()).status_code == 200


def test_the_rate_is_read_from_the_key_at_call_time(api, limited, clock):
    for _ in range(3):
        api.post(CHAT, chat())
    assert api.post(CHAT, chat()).status_code == 429
    ApiKey.objects.update(requests_per_minute=None)
    limited.requests_per_minute = 10
    limited.save()
    assert api.post(CHAT, chat()).status_code == 200


def test_tokens_per_minute_count_prompt_plus_max_tokens_and_refund_unused(api, limited, fake_engine, clock):
    fake_engine.replies.extend(["ok"] * 5)
    first = api.post(CHAT, chat(max_tokens=400))
    assert first.status_code == 200
    prompt = first.json()["usage"]["prompt_tokens"]
    # Admitted with prompt + 400 reserved; settled to prompt + 2, refunding the rest.
    assert int(api.get("/v1/models")["x-ratelimit-remaining-tokens"]) == 1000 - prompt - 2
    refused = api.post(CHAT, chat(max_tokens=990))
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.json()["error"]["type"] == "tokens"
    assert "Retry-After" in refused
    assert len(fake_engine.submitted) == 1  # the refused request ran no model
    clock.advance(minutes=1)
    assert api.post(CHAT, chat(max_tokens=990 - prompt)).status_code == 200


def test_when_the_cache_is_down_limits_fail_open_and_nothing_is_a_500(api, limited, settings, clock):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    }
    from django.core.cache import caches

    caches._settings = None  # rebuild caches from the changed settings
    try:
        for _ in range(5):  # past the limit of 3: nothing counts while the cache is down
            response = api.post(CHAT, chat())
            assert response.status_code == 200
        assert "x-ratelimit-limit-requests" not in response
    finally:
        del caches._settings
