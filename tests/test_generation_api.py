"""The OpenAI-compatible generation endpoints, on the fake engine, through the real middleware and auth."""

import json
import logging
import time

import pytest

from accounts.models import UsageRecord
from inference.embedding_model import EMBEDDING_MODEL_ID
from tests.conftest import MODEL, disconnect_client, sse_payloads

CHAT = "/v1/chat/completions"


def chat_body(**overrides):
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], **overrides}


def test_a_chat_completion_has_openais_shape_and_counts_tokens(api, fake_engine):
    fake_engine.replies.append("Hello there.")
    response = api.post(CHAT, chat_body())
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    assert body["id"].startswith("chatcmpl-")
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Hello there."}, "logprobs": None, "finish_reason": "stop"}
    ]
    prompt_tokens = len(fake_engine.submitted[0][0])
    assert body["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": 12, "total_tokens": prompt_tokens + 12}
    assert response["x-request-id"].startswith("req_")


def test_every_keyed_request_leaves_one_usage_row(api, fake_engine):
    fake_engine.replies.append("abc")
    response = api.post(CHAT, chat_body())
    row = UsageRecord.objects.get()
    assert row.request_id == response["x-request-id"]
    assert (row.endpoint, row.model, row.status_code, row.state) == ("chat.completions", MODEL, 200, "settled")
    assert row.completion_tokens == 3 and row.prompt_tokens == response.json()["usage"]["prompt_tokens"]
    assert row.latency_ms is not None and row.reserved_tokens == row.prompt_tokens + 256  # prompt + default max_tokens


def test_max_tokens_ends_with_finish_reason_length(api, fake_engine):
    fake_engine.replies.append("a long reply")
    body = api.post(CHAT, chat_body(max_tokens=3)).json()
    assert body["choices"][0]["message"]["content"] == "a l"
    assert body["choices"][0]["finish_reason"] == "length"


def test_stop_sequences_end_the_reply_before_them(api, fake_engine):
    fake_engine.replies.append("one, two; three")
    body = api.post(CHAT, chat_body(stop=[";", "zzz"])).json()
    assert body["choices"][0]["message"]["content"] == "one, two"
    assert body["choices"][0]["finish_reason"] == "stop"


def test_text_completions_have_openais_shape(api, fake_engine):
    fake_engine.replies.append(" world")
    response = api.post("/v1/completions", {"model": MODEL, "prompt": "Hello", "max_tokens": 10})
    body = response.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == " world"
    assert body["usage"]["prompt_tokens"] == 5
    assert fake_engine.submitted[0][0] == [ord(c) for c in "Hello"]


def test_a_streamed_chat_sends_the_role_first_then_pieces_then_done(api, fake_engine):
    fake_engine.replies.append("Hey")
    response = api.post(CHAT, chat_body(stream=True, stream_options={"include_usage": True}))
    assert response["Content-Type"].startswith("text/event-stream")
    payloads = sse_payloads(response)
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == "Hey"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert UsageRecord.objects.get().completion_tokens == 3


def test_a_stream_without_include_usage_sends_no_usage(api, fake_engine):
    payloads = sse_payloads(api.post(CHAT, chat_body(stream=True)))
    assert all("usage" not in chunk for chunk in payloads[:-1])


def test_a_streamed_text_completion_ends_with_done(api, fake_engine):
    fake_engine.replies.append("xy")
    payloads = sse_payloads(api.post("/v1/completions", {"model": MODEL, "prompt": "a", "stream": True}))
    assert "".join(p["choices"][0]["text"] for p in payloads[:-1]) == "xy"
    assert payloads[-2]["choices"][0]["finish_reason"] == "stop"
    assert payloads[-1] == "[DONE]"


def test_a_client_that_disconnects_mid_stream_is_charged_what_was_generated(api, fake_engine):
    reply = "Calm words about the sea and the sky. " * 10
    fake_engine.replies.append(reply)
    response = api.post(CHAT, chat_body(stream=True, max_tokens=400))
    for raw in response.streaming_content:
        if b'"content":"C' in raw:  # checked text has reached the client; now it goes away
            break
    disconnect_client(response)
    generated = fake_engine.handles[0].completion_tokens
    assert 0 < generated < len(reply)
    row = UsageRecord.objects.get()
    assert row.state == "settled" and row.completion_tokens == generated and row.status_code == 499
    assert fake_engine.handles[0].cancelled


@pytest.mark.parametrize(
    "overrides, param",
    [
        ({"n": 2}, "n"),
        ({"model": "gpt-9"}, "model"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 10**6}, "max_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
def test_bad_input_gets_a_clear_400_naming_the_field_and_charges_nothing(api, fake_engine, overrides, param):
    response = api.post(CHAT, chat_body(**overrides))
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    assert fake_engine.submitted == []
    row = UsageRecord.objects.get()
    assert (row.prompt_tokens, row.completion_tokens, row.status_code) == (0, 0, 400)


def test_a_prompt_longer_than_the_context_is_refused(api, fake_engine, settings):
    settings.SLUICE_MAX_PROMPT_TOKENS = 50
    response = api.post(CHAT, chat_body(messages=[{"role": "user", "content": "x" * 100}]))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert fake_engine.submitted == []


def test_prompt_plus_max_tokens_beyond_the_model_window_is_refused(api, fake_engine):
    fake_engine.context_window = 100
    response = api.post(CHAT, chat_body(max_tokens=50, messages=[{"role": "user", "content": "x" * 60}]))
    assert response.status_code == 400
    assert "maximum context length" in response.json()["error"]["message"]


def test_invalid_json_is_a_400(api, fake_engine):
    response = api.post(CHAT, raw=b"{not json")
    assert response.status_code == 400 and "JSON" in response.json()["error"]["message"]
    assert fake_engine.submitted == []


def test_an_oversized_body_is_a_413_before_any_work(api, fake_engine, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    body = chat_body(messages=[{"role": "user", "content": "x" * 5000}])
    response = api.post(CHAT, body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert fake_engine.submitted == []


def test_unknown_paths_and_wrong_methods_answer_in_json(api):
    missing = api.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = api.get(CHAT)
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_a_key_without_the_inference_scope_is_refused(client, account, fake_engine):
    from accounts.services import key_create
    from tests.conftest import Api

    key = key_create(account=account, scopes=["usage:read"]).plaintext
    response = Api(client, key).post(CHAT, chat_body())
    assert response.status_code == 403
    assert "inference" in response.json()["error"]["message"]
    assert fake_engine.submitted == []


def test_a_key_limited_to_other_models_is_refused(client, account, fake_engine):
    from accounts.services import key_create
    from tests.conftest import Api

    key = key_create(account=account, allowed_models=["other-model"]).plaintext
    response = Api(client, key).post(CHAT, chat_body())
    assert response.status_code == 403 and response.json()["error"]["code"] == "model_not_allowed"
    assert fake_engine.submitted == []


def test_the_engine_being_full_is_a_fast_503_with_retry_after(api, fake_engine):
    fake_engine.max_running = 0
    response = api.post(CHAT, chat_body())
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "engine_overloaded"
    row = UsageRecord.objects.get()
    assert (row.prompt_tokens, row.completion_tokens, row.status_code) == (0, 0, 503)


def test_the_flask_contract_takes_text_and_returns_text(api, fake_engine):
    fake_engine.replies.append("Hi!")
    response = api.post("/generate", {"text": "Hello"})
    assert response.status_code == 200 and response.json() == {"text": "Hi!"}
    assert UsageRecord.objects.get().endpoint == "generate"


def test_the_flask_contract_accepts_curls_default_content_type(client, api_key, fake_engine):
    fake_engine.replies.append("Hi!")
    response = client.post("/generate", data='{"text":"Hello"}', content_type="application/x-www-form-urlencoded",
                           HTTP_AUTHORIZATION=f"Bearer {api_key}")
    assert response.status_code == 200 and response.json() == {"text": "Hi!"}


def test_the_flask_contract_refuses_missing_text(api, fake_engine):
    response = api.post("/generate", {"prompt": "Hello"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "text"


def test_models_are_listed_in_openais_shape(api):
    body = api.get("/v1/models").json()
    assert body == {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "sluice"}
                                               for model in (MODEL, EMBEDDING_MODEL_ID)]}  # generators, then embeddings
    assert api.get(f"/v1/models/{MODEL}").json()["id"] == MODEL
    assert api.get("/v1/models/nope").status_code == 404


def test_health_and_readiness(anonymous, db):
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    deadline = time.monotonic() + 120
    ready = anonymous.get("/readyz")  # starts loading the moderation detectors and task models if nothing has yet
    while (ready.status_code == 503 and "loading" in (ready.json()["moderation"], ready.json()["tasks"])
           and time.monotonic() < deadline):
        time.sleep(0.2)
        ready = anonymous.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "model": "ready", "moderation": "ready",
                                                         "tasks": "ready", "database": "ok"}


def test_readiness_is_false_until_the_moderation_detectors_are_loaded(anonymous, db, monkeypatch):
    import moderation.detectors

    monkeypatch.setattr(moderation.detectors, "detectors_status", lambda: "loading")
    response = anonymous.get("/readyz")
    assert response.status_code == 503 and response.json()["moderation"] == "loading"


def test_readiness_is_false_until_the_model_is_loaded(anonymous, db, monkeypatch, caplog):
    import inference.views

    monkeypatch.setattr(inference.views, "engine_status", lambda: "loading")
    with caplog.at_level(logging.INFO, logger="django.request"):
        response = anonymous.get("/readyz")
        assert response.status_code == 503 and response.json()["model"] == "loading"
        assert not [r for r in caplog.records if r.name == "django.request"]  # an expected answer, not an error
        anonymous.get("/v1/models/no-such-model")  # other errors are still logged
    assert [r.levelname for r in caplog.records if r.name == "django.request"] == ["WARNING"]


def test_the_openapi_schema_and_docs_are_served(anonymous, db):
    schema = anonymous.get("/v1/schema", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    assert "/v1/chat/completions" in paths and "/generate" in paths
    docs = anonymous.get("/docs")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
