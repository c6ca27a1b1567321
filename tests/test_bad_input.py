"""Bad input from outside (issue 13): each gets a clear 400 in the one error format and changes nothing —
no model call, no tokens charged, no quota spent. Through HTTP, with the real middleware and auth."""

import json
from datetime import date, timedelta

import pytest
from django.db import connection
from django.db.models import Sum

from accounts.models import QuotaCounter, UsageRecord
from moderation.models import ModerationEvent
from tests.conftest import MODEL, sse_payloads

CHAT = "/v1/chat/completions"
THREAT = "I am going to kill you and your whole family tonight."


def chat(content="Hi", **extra):
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


@pytest.fixture
def metered(account):
    """The account has a daily quota, so a charged request would show in its counter."""
    account.daily_token_quota = 100_000
    account.save()
    return account


def assert_refused_and_free(response, fake_engine, *, param, code=None):
    assert response.status_code == 400, getattr(response, "content", "a stream")
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    if code:
        assert error["code"] == code, error
    assert fake_engine.submitted == []
    charged = UsageRecord.objects.aggregate(p=Sum("prompt_tokens"), c=Sum("completion_tokens"))
    assert (charged["p"] or 0, charged["c"] or 0) == (0, 0)
    assert not UsageRecord.objects.filter(state=UsageRecord.PENDING).exists()
    spent = QuotaCounter.objects.aggregate(u=Sum("used"), r=Sum("reserved"))
    assert (spent["u"] or 0, spent["r"] or 0) == (0, 0)


# --- 1. /v1/usage date ranges -------------------------------------------------------------------------


def test_usage_refuses_a_range_longer_than_366_days_naming_start_date(api, clock):
    response = api.get("/v1/usage?start_date=0001-01-01&end_date=9999-12-30")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "start_date" and "366" in response.json()["error"]["message"]
    too_long = api.get("/v1/usage?start_date=2025-01-01&end_date=2026-01-02")  # 367 days
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "start_date"
    start_only = api.get("/v1/usage?start_date=2020-01-01")  # up to today: over six years
    assert start_only.status_code == 400 and start_only.json()["error"]["param"] == "start_date"
    assert api.get("/v1/usage?start_date=2025-01-01&end_date=2026-01-01").status_code == 200  # 366 days


def test_usage_dates_at_the_ends_of_the_calendar_are_a_400_or_a_report_never_a_500(api, clock):
    after_today = api.get("/v1/usage?start_date=9999-12-31")
    assert after_today.status_code == 400 and after_today.json()["error"]["param"] == "start_date"
    last_day = api.get("/v1/usage?start_date=9999-12-31&end_date=9999-12-31")
    assert last_day.status_code == 200 and last_day.json()["totals"]["requests"] == 0
    end_only = api.get("/v1/usage?end_date=9999-12-31")
    assert end_only.status_code == 200 and end_only.json()["start_date"] == "9998-12-31"
    first_days = api.get("/v1/usage?end_date=0001-01-05")
    assert first_days.status_code == 200 and first_days.json()["start_date"] == "0001-01-01"


def test_a_usage_report_over_a_year_costs_a_few_queries_not_one_per_day(api, fake_engine, clock,
                                                                         django_assert_max_num_queries):
    fake_engine.replies.append("abc")
    assert api.post(CHAT, chat()).status_code == 200
    today = clock.now().date()
    with django_assert_max_num_queries(20):
        response = api.get(f"/v1/usage?start_date={today - timedelta(days=365)}&end_date={today}")
    assert response.status_code == 200
    assert response.json()["totals"]["requests"] == 1
    assert response.json()["by_day"] == [{"day": today.isoformat(), **response.json()["totals"]}]


def test_usage_without_dates_reports_the_last_366_days(api, fake_engine, clock):
    fake_engine.replies.append("abc")
    api.post(CHAT, chat())
    report = api.get("/v1/usage").json()
    today = clock.now().date()
    assert (report["start_date"], report["end_date"]) == ((today - timedelta(days=365)).isoformat(), today.isoformat())
    assert report["totals"]["requests"] == 1


# --- 2. seed out of range -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [2**64, 2**63, -(2**63) - 1, 10**30])
@pytest.mark.parametrize("stream", [False, True])
def test_an_out_of_range_seed_is_a_400_that_charges_nothing(api, fake_engine, metered, seed, stream):
    response = api.post(CHAT, chat(seed=seed, stream=stream))
    assert_refused_and_free(response, fake_engine, param="seed")
    completion = api.post("/v1/completions", {"model": MODEL, "prompt": "Hi", "seed": seed, "stream": stream})
    assert_refused_and_free(completion, fake_engine, param="seed")


@pytest.mark.parametrize("seed", [2**63 - 1, -(2**63), 0])
def test_a_seed_within_int64_is_accepted(api, fake_engine, seed):
    fake_engine.replies.append("ok")
    assert api.post(CHAT, chat(seed=seed)).status_code == 200
    assert fake_engine.submitted[0][1].seed == seed


@pytest.mark.model
@pytest.mark.parametrize("stream", [False, True])
def test_the_real_engine_refuses_an_out_of_range_seed_before_charging_and_samples_with_the_int64_ends(
        api, real_engine, metered, stream):
    for seed in (2**64, -(2**63) - 1):
        response = api.post(CHAT, chat(seed=seed, stream=stream, max_tokens=2, temperature=1.0))
        assert response.status_code == 400 and response.json()["error"]["param"] == "seed"
    assert UsageRecord.objects.aggregate(p=Sum("prompt_tokens"))["p"] in (0, None)
    for seed in (2**63 - 1, -(2**63)):
        response = api.post(CHAT, chat(seed=seed, stream=stream, max_tokens=2, temperature=1.0))
        assert response.status_code == 200
        if stream:
            payloads = sse_payloads(response)
            assert payloads[-1] == "[DONE]"
            assert payloads[-2]["choices"][0]["finish_reason"] in ("length", "stop")
        else:
            assert response.json()["choices"][0]["finish_reason"] in ("length", "stop")
    assert not UsageRecord.objects.filter(error_code="engine_error").exists()


# --- 3. deeply nested JSON ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CHAT, "/v1/completions", "/v1/moderations", "/v1/sentiment", "/v1/qa", "/generate",
                                  "/v1/keys", "/v1/embeddings"])
def test_json_nested_10000_deep_is_a_400_not_a_recursion_error(api, fake_engine, metered, path):
    body = '{"model": "x", "input": ' + "[" * 10_000 + "]" * 10_000 + "}"
    assert_refused_and_free(api.post(path, raw=body.encode()), fake_engine, param=None)
    assert "nested" in api.post(path, raw=body.encode()).json()["error"]["message"]


def test_json_nested_just_past_the_bound_is_refused_and_ordinary_nesting_is_not(api, fake_engine):
    from platform.parsers import MAX_JSON_DEPTH

    deep = {"input": json.loads("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)}  # the body itself is one more level
    response = api.post("/v1/moderations", deep)
    assert response.status_code == 400 and "nested" in response.json()["error"]["message"]
    parts = chat(content=[{"type": "text", "text": "Hi"}])
    fake_engine.replies.append("ok")
    assert api.post(CHAT, parts).status_code == 200


# --- 4. lone surrogates, 12. NUL ----------------------------------------------------------------------

SURROGATE = '"a\\ud800b"'  # as JSON text: the escape decodes to a lone surrogate


@pytest.mark.parametrize(
    "path, body, param",
    [
        (CHAT, '{"model": "%s", "messages": [{"role": "user", "content": %s}]}' % (MODEL, SURROGATE),
         "messages[0].content"),
        ("/v1/completions", '{"model": "%s", "prompt": %s}' % (MODEL, SURROGATE), "prompt"),
        ("/v1/completions", '{"model": "%s", "prompt": [%s]}' % (MODEL, SURROGATE), "prompt[0]"),
        ("/v1/moderations", '{"input": %s}' % SURROGATE, "input"),
        ("/v1/moderations", '{"input": ["fine", %s]}' % SURROGATE, "input[1]"),
        ("/v1/sentiment", '{"input": %s}' % SURROGATE, "input"),
        ("/v1/qa", '{"question": %s, "context": "The tower is in Paris."}' % SURROGATE, "question"),
        ("/v1/qa", '{"input": [{"question": "Where?", "context": %s}]}' % SURROGATE, "input[0].context"),
        ("/v1/embeddings", '{"input": ["fine", %s]}' % SURROGATE, "input[1]"),
        ("/generate", '{"text": %s}' % SURROGATE, "text"),
        ("/v1/keys", '{"name": %s}' % SURROGATE, "name"),
    ],
)
def test_a_lone_surrogate_is_a_400_naming_the_field(api, fake_engine, metered, path, body, param):
    assert_refused_and_free(api.post(path, raw=body.encode()), fake_engine, param=param, code="invalid_value")


@pytest.mark.parametrize(
    "path, body, param",
    [
        (CHAT, chat(THREAT + "\x00"), "messages[0].content"),
        ("/v1/completions", {"model": MODEL, "prompt": "Hi\x00"}, "prompt"),
        ("/v1/moderations", {"input": THREAT + "\x00"}, "input"),
        ("/v1/sentiment", {"input": ["ok", "a\x00b"]}, "input[1]"),
        ("/v1/qa", {"question": "Where?", "context": "Paris\x00"}, "context"),
        ("/v1/embeddings", {"input": ["ok", "a\x00b"]}, "input[1]"),
        ("/v1/keys", {"name": "a\x00b"}, "name"),
    ],
)
def test_a_nul_character_is_a_400_naming_the_field(api, fake_engine, metered, path, body, param):
    assert_refused_and_free(api.post(path, body), fake_engine, param=param, code="invalid_value")
    assert not ModerationEvent.objects.exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="NUL only fails to store on PostgreSQL")
def test_on_postgresql_a_flagged_text_with_nul_is_a_400_not_a_503(api, fake_engine, metered):
    response = api.post(CHAT, chat(THREAT + "\x00"))
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_value"
    assert fake_engine.submitted == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="NUL only fails to store on PostgreSQL")
def test_on_postgresql_a_flagged_output_with_nul_is_logged_with_the_nul_replaced(api, fake_engine, monkeypatch):
    # The fake engine's token 0 is its end of text; let its token 1 decode to NUL, as a real model's byte token can.
    decode = fake_engine.decode
    monkeypatch.setattr(fake_engine, "decode", lambda ids: decode(ids).replace("\x01", "\x00"))
    fake_engine.replies.append("I am going to kill you\x01 and your whole family tonight.")
    response = api.post(CHAT, chat("Please write a short poem about the sea."))
    assert response.status_code == 200
    event = ModerationEvent.objects.get(direction="output")
    assert "\x00" not in event.text and "\ufffd" in event.text


# --- 5. an empty prompt list --------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_an_empty_prompt_list_is_a_400(api, fake_engine, metered, stream):
    response = api.post("/v1/completions", {"model": MODEL, "prompt": [], "stream": stream})
    assert_refused_and_free(response, fake_engine, param="prompt")


# --- 14. OpenAI fields this server does not implement -------------------------------------------------


@pytest.mark.parametrize(
    "path, field, value",
    [
        (CHAT, "functions", [{"name": "f", "parameters": {}}]),
        (CHAT, "function_call", "auto"),
        (CHAT, "presence_penalty", 0.5),
        (CHAT, "frequency_penalty", 0.5),
        (CHAT, "logit_bias", {"50256": -100}),
        ("/v1/completions", "echo", True),
        ("/v1/completions", "best_of", 2),
        ("/v1/completions", "suffix", " and so on"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_an_unimplemented_openai_field_is_a_400_naming_it(api, fake_engine, metered, path, field, value, stream):
    body = chat(stream=stream) if path == CHAT else {"model": MODEL, "prompt": "Hi", "stream": stream}
    response = api.post(path, {**body, field: value})
    assert_refused_and_free(response, fake_engine, param=field, code="unsupported_parameter")


@pytest.mark.parametrize(
    "path, extra",
    [
        (CHAT, {"logprobs": False, "top_logprobs": None, "tools": None, "tool_choice": "none",
                "response_format": {"type": "text"}, "parallel_tool_calls": None, "functions": None,
                "function_call": "none", "presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {}}),
        ("/v1/completions", {"logprobs": None, "echo": False, "best_of": 1, "suffix": None}),
    ],
)
def test_unimplemented_fields_sent_with_their_no_op_value_are_accepted(api, fake_engine, path, extra):
    fake_engine.replies.append("ok")
    body = chat() if path == CHAT else {"model": MODEL, "prompt": "Hi"}
    assert api.post(path, {**body, **extra}).status_code == 200


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/sentiment", {"input": "A lovely film.", "model": "gpt-4o"}),
        ("/v1/qa", {"question": "Where?", "context": "In Paris.", "model": "distilbert-squad"}),
    ],
)
def test_an_unknown_model_on_the_task_endpoints_is_a_400_naming_model(api, fake_engine, metered, path, body):
    assert_refused_and_free(api.post(path, body), fake_engine, param="model", code="model_not_found")
    assert api.post(path, {**body, "model": MODEL}).status_code == 200
