"""The platform fronting other real OpenAI-compatible server processes: two Sluice instances as upstreams.

The gateway is this test process's Django stack (the test database, the real middleware, moderation and
metering); the upstreams are gunicorn servers on the fake engine. The last test kills one of them.
"""

import sqlite3
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from accounts.models import UsageRecord
from prometheus_client import REGISTRY
from inference.embedding_model import EMBEDDING_MODEL_ID
from inference.registry import engine_for
from moderation.models import AllowedCount
from tests.conftest import sse_payloads
from tests.servers import Server, manage, server_env
from tests.test_remote_engine import THREAT

pytestmark = pytest.mark.server

UPSTREAM_MODEL = "SmolLM2-135M-Instruct"
REMOTE = "smol-remote"
FAKE_REPLY = "Hello from the fake engine."
CHAT = "/v1/chat/completions"

UPSTREAM_SETUP = """
from accounts.models import Account
from moderation.models import ModerationPolicy
Account.objects.update(requests_per_minute=100000, tokens_per_minute=10**9)
ModerationPolicy.objects.create(name="off upstream: the gateway moderates", check_input=False, check_output=False)
"""


def start_all(servers: list[Server]) -> None:
    with ThreadPoolExecutor(len(servers)) as pool:
        list(pool.map(lambda server: server.start(), servers))


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory):
    folder = tmp_path_factory.mktemp("upstreams")
    database = folder / "db.sqlite3"
    env = server_env(DATABASE_URL=f"sqlite:///{database}", CACHE_URL="locmem://", SLUICE_ENGINE="fake")
    manage(env, "migrate", "--noinput")
    key = manage(env, "create_api_key", "--account", "gateway").strip().splitlines()[-1]
    manage(env, "shell", "-c", UPSTREAM_SETUP)
    servers = [Server(env, log_path=folder / f"upstream{i}.log") for i in range(2)]
    start_all(servers)
    yield servers, key, database
    for server in servers:
        server.stop()


@pytest.fixture
def gateway(settings, upstreams):
    servers, key, database = upstreams
    settings.SLUICE_REMOTE_MODELS = {REMOTE: {
        "urls": [f"{server.url}/v1" for server in servers], "api_key": key, "tokenizer": "local",
        "upstream_model": UPSTREAM_MODEL, "context_window": None,
    }}
    return servers, database


def upstream_usage_rows(database) -> list[tuple]:
    with sqlite3.connect(database) as connection:
        return connection.execute(
            "SELECT prompt_tokens, completion_tokens, status_code FROM accounts_usagerecord"
            " WHERE endpoint = 'chat.completions' ORDER BY id"  # not the health probes' GET /v1/models
        ).fetchall()


def chat(content="Say hello.", **extra):
    return {"model": REMOTE, "messages": [{"role": "user", "content": content}], **extra}


def test_a_streamed_chat_passes_through_with_moderation_and_metering(api, gateway):
    servers, database = gateway
    rows_before = len(upstream_usage_rows(database))
    response = api.post(CHAT, chat(stream=True, stream_options={"include_usage": True}, max_tokens=64))
    payloads = sse_payloads(response)
    text = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads[:-1] if p["choices"])
    assert text == FAKE_REPLY and payloads[-1] == "[DONE]"
    usage = payloads[-2]["usage"]
    upstream_rows = upstream_usage_rows(database)
    assert len(upstream_rows) == rows_before + 1
    # Metered here with the upstream's own counts (its tokenizer), which the upstream charged too.
    assert upstream_rows[-1] == (usage["prompt_tokens"], usage["completion_tokens"], 200)
    row = UsageRecord.objects.get(request_id=response["x-request-id"])
    assert (row.model, row.prompt_tokens, row.completion_tokens, row.status_code) == (
        REMOTE, usage["prompt_tokens"], len(FAKE_REPLY), 200)
    assert AllowedCount.objects.get(direction="output").count >= 1  # output moderation ran on the passthrough
    # Input moderation: a threat is refused here and never reaches an upstream.
    blocked = api.post(CHAT, chat(THREAT, stream=True))
    assert blocked.status_code == 400 and blocked.json()["error"]["code"] == "content_filter"
    assert len(upstream_usage_rows(database)) == len(upstream_rows)


def test_killing_one_of_two_upstreams_keeps_the_service_answering_through_the_other(api, gateway):
    servers, _ = gateway
    labels = [server.url.removeprefix("http://") for server in servers]

    def served_by(label):
        return REGISTRY.get_sample_value(
            "sluice_upstream_requests_total", {"model": REMOTE, "upstream": label, "outcome": "ok"}) or 0

    before = [served_by(label) for label in labels]
    for _ in range(4):
        assert api.post(CHAT, chat()).json()["choices"][0]["message"]["content"] == FAKE_REPLY
    assert all(served_by(label) > count for label, count in zip(labels, before))  # both took requests

    servers[0].kill()
    # It is gone: refused, or reset by a socket still closing in the dying process.
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(f"{servers[0].url}/healthz", timeout=2)
    for index in range(6):
        body = chat(stream=index % 2 == 0)
        response = api.post(CHAT, body)
        assert response.status_code == 200
        if body["stream"]:
            payloads = sse_payloads(response)
            text = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads[:-1] if p["choices"])
            assert text == FAKE_REPLY and payloads[-1] == "[DONE]"
        else:
            assert response.json()["choices"][0]["message"]["content"] == FAKE_REPLY
    engine = engine_for(REMOTE)
    engine.probe()
    assert [u.healthy for u in engine.upstreams] == [False, True]
    assert REGISTRY.get_sample_value("sluice_upstream_healthy", {"model": REMOTE, "upstream": labels[0]}) == 0


@pytest.mark.model
def test_the_openai_client_streams_the_real_model_through_a_remote_only_gateway_server(tmp_path):
    """Two processes: a Sluice serving the real model, and a gateway Sluice that loads no model and forwards."""
    upstream_env = server_env(DATABASE_URL=f"sqlite:///{tmp_path / 'upstream.sqlite3'}", CACHE_URL="locmem://")
    manage(upstream_env, "migrate", "--noinput")
    upstream_key = manage(upstream_env, "create_api_key", "--account", "gateway").strip().splitlines()[-1]
    upstream = Server(upstream_env, log_path=tmp_path / "upstream.log")
    gateway_env = None
    try:
        upstream.start()
        remote = (f'{{"{REMOTE}": {{"urls": ["{upstream.url}/v1"], "api_key": "{upstream_key}", '
                  f'"upstream_model": "{UPSTREAM_MODEL}", "tokenizer": "local"}}}}')
        gateway_env = server_env(DATABASE_URL=f"sqlite:///{tmp_path / 'gateway.sqlite3'}", CACHE_URL="locmem://",
                                 SLUICE_LOCAL_MODEL="0", SLUICE_REMOTE_MODELS=remote)
        manage(gateway_env, "migrate", "--noinput")
        key = manage(gateway_env, "create_api_key", "--account", "client").strip().splitlines()[-1]
        gateway = Server(gateway_env, log_path=tmp_path / "gateway.log").start()
        try:
            client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=180)
            assert [m.id for m in client.models.list()] == [REMOTE, EMBEDDING_MODEL_ID]  # embeddings serve here too
            stream = client.chat.completions.create(
                model=REMOTE, messages=[{"role": "user", "content": "What is the capital of France?"}],
                max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True},
            )
            pieces, usage = [], None
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
                usage = chunk.usage or usage
            assert "Paris" in "".join(pieces)
            assert usage.prompt_tokens > 10 and 0 < usage.completion_tokens <= 24
        finally:
            gateway.stop()
        gateway_log = (tmp_path / "gateway.log").read_text()
        assert "Loading model" not in gateway_log  # the gateway never loaded a model
    finally:
        upstream.stop()
