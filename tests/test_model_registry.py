"""Local and remote models side by side; a worker that serves remote models only."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from accounts.services import key_create
from inference.embedding_model import EMBEDDING_MODEL_ID
from inference.engines.factory import get_engine, set_engine
from platform.env import remote_models_from_env
from tests.conftest import MODEL, Api
from tests.test_remote_engine import REMOTE, chat, remote_config
from tests.upstream_stub import StubUpstream

CHAT = "/v1/chat/completions"


@pytest.fixture
def upstream():
    stub = StubUpstream(["from upstream"], usage={"prompt_tokens": 5, "completion_tokens": 2}).start()
    yield stub
    stub.stop()


def test_v1_models_lists_the_local_model_first_then_the_remote_ones(api, settings, upstream):
    settings.SLUICE_REMOTE_MODELS = remote_config(upstream.url)
    # then the embedding models (tests/test_embeddings.py)
    assert [m["id"] for m in api.get("/v1/models").json()["data"]] == [MODEL, REMOTE, EMBEDDING_MODEL_ID]
    assert api.get(f"/v1/models/{REMOTE}").json()["id"] == REMOTE


def test_each_request_goes_to_the_engine_of_its_model(api, settings, upstream, fake_engine):
    settings.SLUICE_REMOTE_MODELS = remote_config(upstream.url)
    fake_engine.replies.append("from the local model")
    local = api.post(CHAT, {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}).json()
    remote = api.post(CHAT, chat("Hi")).json()
    assert local["choices"][0]["message"]["content"] == "from the local model"
    assert remote["choices"][0]["message"]["content"] == "from upstream"
    assert len(fake_engine.submitted) == 1 and len(upstream.requests) == 1


def test_an_unknown_model_is_a_400_that_lists_the_available_ones(api, settings, upstream):
    settings.SLUICE_REMOTE_MODELS = remote_config(upstream.url)
    error = api.post(CHAT, chat() | {"model": "nope"}).json()["error"]
    assert error["code"] == "model_not_found" and MODEL in error["message"] and REMOTE in error["message"]


def test_a_keys_allowed_models_apply_to_local_and_remote_models_alike(client, account, settings, upstream):
    settings.SLUICE_REMOTE_MODELS = remote_config(upstream.url)
    local_only = Api(client, key_create(account=account, allowed_models=[MODEL]).plaintext)
    remote_only = Api(client, key_create(account=account, allowed_models=[REMOTE]).plaintext)
    assert local_only.post(CHAT, chat()).status_code == 403
    assert remote_only.post(CHAT, chat() | {"model": MODEL}).status_code == 403
    assert remote_only.post(CHAT, chat()).status_code == 200
    assert [m["id"] for m in remote_only.get("/v1/models").json()["data"]] == [REMOTE]
    assert local_only.get(f"/v1/models/{REMOTE}").status_code == 404
    assert len(upstream.requests) == 1


def test_a_remote_only_worker_never_loads_a_local_model(api, settings, upstream, anonymous):
    set_engine(None)
    settings.SLUICE_LOCAL_MODEL = False
    settings.SLUICE_REMOTE_MODELS = remote_config(upstream.url, tokenizer="none")
    assert [m["id"] for m in api.get("/v1/models").json()["data"]] == [REMOTE, EMBEDDING_MODEL_ID]
    assert api.post(CHAT, chat()).status_code == 200
    assert api.post("/generate", {"text": "Hi"}).json() == {"text": "from upstream"}  # the first remote model
    ready = anonymous.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model"] == "ready"
    with pytest.raises(RuntimeError, match="SLUICE_LOCAL_MODEL=0"):
        get_engine()


# --- the setting ---

def test_the_remote_models_setting_fills_in_defaults(monkeypatch):
    monkeypatch.setenv("SLUICE_REMOTE_MODELS", '{"m": {"urls": ["http://h1:8000/v1/", "https://h2/v1"]}}')
    assert remote_models_from_env("SLUICE_REMOTE_MODELS") == {
        "m": {"urls": ["http://h1:8000/v1", "https://h2/v1"], "api_key": "", "tokenizer": "none",
              "upstream_model": "m", "context_window": None, "defaults": {}},
    }


@pytest.mark.parametrize("raw, complaint", [
    ("{not json", "must be JSON"),
    ('["m"]', "JSON object"),
    ('{"m": {"urls": []}}', "non-empty list"),
    ('{"m": {"urls": ["ftp://h/v1"]}}', "not an http"),
    ('{"m": {"urls": ["http://h/v1"], "tokenizer": "bpe"}}', "tokenizer must be one of"),
    ('{"m": {"urls": ["http://h/v1"], "url": "typo"}}', "unknown fields"),
    ('{"m": {"urls": ["http://h/v1"], "context_window": -1}}', "context_window"),
])
def test_a_bad_remote_models_setting_fails_loudly_naming_the_mistake(monkeypatch, raw, complaint):
    monkeypatch.setenv("SLUICE_REMOTE_MODELS", raw)
    with pytest.raises(ImproperlyConfigured, match=complaint):
        remote_models_from_env("SLUICE_REMOTE_MODELS")
