"""The official openai client against the app in-process (WSGI, real middleware and auth), on the fake engine."""

import httpx
import openai
import pytest
from django.core.wsgi import get_wsgi_application

from tests.conftest import MODEL


@pytest.fixture(autouse=True)
def keep_the_test_transaction_open():
    """The WSGI handler ends each request by closing the database connection (close_old_connections); in a
    test that connection holds the test's transaction (on PostgreSQL it would be lost), so keep it open."""
    from unittest import mock

    from django.db import connections

    with mock.patch.object(connections["default"], "close_if_unusable_or_obsolete"):
        yield


@pytest.fixture
def openai_client(api_key):
    transport = httpx.WSGITransport(app=get_wsgi_application())
    http_client = httpx.Client(transport=transport, base_url="http://testserver/v1")
    return openai.OpenAI(api_key=api_key, base_url="http://testserver/v1", http_client=http_client, max_retries=0)


def ask(client, **extra):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], **extra)


def test_the_client_reads_completions_and_streams(openai_client, fake_engine):
    fake_engine.replies.extend(["Hello!", "Streamed."])
    assert ask(openai_client).choices[0].message.content == "Hello!"
    pieces = [c.choices[0].delta.content or "" for c in ask(openai_client, stream=True) if c.choices]
    assert "".join(pieces) == "Streamed."


def test_a_rate_limit_is_a_rate_limit_error_with_code_rate_limit_exceeded(openai_client, account, clock):
    account.requests_per_minute = 1
    account.save()
    ask(openai_client)
    with pytest.raises(openai.RateLimitError) as raised:
        ask(openai_client)
    assert raised.value.code == "rate_limit_exceeded"
    assert raised.value.response.headers["retry-after"]


def test_a_spent_quota_is_a_rate_limit_error_with_code_insufficient_quota(openai_client, account, clock):
    account.daily_token_quota = 10
    account.save()
    with pytest.raises(openai.RateLimitError) as raised:
        ask(openai_client)
    assert raised.value.code == "insufficient_quota"
    assert raised.value.response.headers["x-should-retry"] == "false"


def test_bad_input_is_a_bad_request_error_naming_the_param(openai_client, fake_engine):
    with pytest.raises(openai.BadRequestError) as raised:
        ask(openai_client, n=3)
    assert raised.value.param == "n"
    assert fake_engine.submitted == []


def test_a_wrong_key_is_an_authentication_error(api_key):
    transport = httpx.WSGITransport(app=get_wsgi_application())
    client = openai.OpenAI(api_key="sk-sluice-nope", base_url="http://testserver/v1", max_retries=0,
                           http_client=httpx.Client(transport=transport, base_url="http://testserver/v1"))
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
