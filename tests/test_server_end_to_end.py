"""The real server process, the real model, the official openai client: what a newcomer sees first."""

import subprocess
import time

import openai
import pytest

from tests.servers import Server, manage, server_env

pytestmark = [pytest.mark.model, pytest.mark.server]

MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def running_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server")
    env = server_env(DATABASE_URL=f"sqlite:///{folder / 'db.sqlite3'}", CACHE_URL="locmem://")
    manage(env, "migrate", "--noinput")
    key = manage(env, "create_api_key", "--account", "e2e").strip().splitlines()[-1]
    server = Server(env, log_path=folder / "server.log").start()
    yield server, key
    server.stop()


@pytest.fixture(scope="module")
def client(running_server):
    server, key = running_server
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=120)


def test_the_openai_client_gets_a_chat_completion_from_the_real_model(client):
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=20, temperature=0
    )
    assert "Paris" in completion.choices[0].message.content
    assert completion.choices[0].finish_reason in {"stop", "length"}
    assert completion.usage.prompt_tokens > 10 and completion.usage.completion_tokens > 0


def test_the_openai_client_streams_chunks_that_arrive_over_time(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count from one to twenty in words."}],
        max_tokens=128,
        temperature=0,
        extra_body={"ignore_eos": True},  # a long stream to watch (output moderation may still end it early)
        stream=True,
        stream_options={"include_usage": True},
    )
    arrivals, pieces, usage = [], [], None
    for chunk in stream:
        arrivals.append(time.monotonic())
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    # Text is released as it is generated and checked (moderation holds back a short window), not all at
    # the end: several pieces, spread over the generation.
    assert len(pieces) >= 3
    assert arrivals[-1] - arrivals[1] > 0.3
    assert 0 < usage.completion_tokens <= 128


def test_the_openai_client_gets_a_text_completion(client):
    completion = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert completion.choices[0].text.strip()
    assert completion.usage.completion_tokens <= 8


def test_a_wrong_key_raises_authentication_error(running_server):
    server, _ = running_server
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-sluice-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_the_flask_contract_works_with_curl(running_server):
    server, key = running_server
    result = subprocess.run(
        ["curl", "-s", "-H", f"Authorization: Bearer {key}", "-d", '{"text":"Hello"}', f"{server.url}/generate"],
        capture_output=True, text=True, timeout=120,
    )
    import json

    assert json.loads(result.stdout)["text"].strip()
