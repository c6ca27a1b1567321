"""Remote models: the platform fronts upstream OpenAI-compatible servers (here scripted stubs in threads).

The gateway is the real Django stack (auth, limits, moderation, usage rows); only generation goes upstream.
"""

import socket
import threading

import pytest

from accounts.models import UsageRecord
from inference.registry import engine_for
from inference.engines.remote import RemoteEngine
from inference.sampling import SamplingParams
from moderation.models import AllowedCount
from tests.conftest import sse_payloads
from tests.servers import free_port
from tests.upstream_stub import StubUpstream, wait_until

CHAT = "/v1/chat/completions"
REMOTE = "remote-model"
THREAT = "I am going to kill you and your whole family tonight."


def remote_config(*urls, **overrides) -> dict:
    config = {"urls": list(urls), "api_key": "upstream-secret", "tokenizer": "local", "upstream_model": "their-model",
              "context_window": None}
    return {REMOTE: {**config, **overrides}}


def chat(content="Tell me something.", **extra):
    return {"model": REMOTE, "messages": [{"role": "user", "content": content}], **extra}


def streamed_text(payloads) -> str:
    return "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads[:-1] if p["choices"])


@pytest.fixture
def stubs():
    started = []

    def start(*args, **kwargs) -> StubUpstream:
        stub = StubUpstream(*args, **kwargs).start()
        started.append(stub)
        return stub

    yield start
    for stub in started:
        stub.stop()


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: connections are refused


class GarbageServer:
    """Answers every connection with fixed bytes, then hangs up."""

    def __init__(self, reply: bytes):
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                connection.sendall(self.reply)

    def stop(self):
        self.sock.close()


# --- passing through ---

def test_a_streamed_chat_passes_through_chunk_by_chunk_and_settles_to_the_upstreams_usage(api, settings, stubs):
    words = [f"word{i} " for i in range(30)]
    upstream = stubs(words, usage={"prompt_tokens": 21, "completion_tokens": 30})
    settings.SLUICE_REMOTE_MODELS = remote_config(upstream.url)
    response = api.post(CHAT, chat(stream=True, stream_options={"include_usage": True}, max_tokens=50))
    assert response.status_code == 200
    payloads = sse_payloads(response)
    assert payloads[-1] == "[DONE]"
    assert streamed_text(payloads) == "".join(words)
    content_chunks = [p for p in payloads[:-1] if p["choices"] and p["choices"][0]["delta"].get("content")]
    assert len(content_chunks) > 3  # released as it arrives (after moderation), not in one piece at the end
    assert all(p["model"] == REMOTE for p in payloads[:-1])
    assert payloads[-2]["usage"] == {"prompt_tokens": 21, "completion_tokens": 30, "total_tokens": 51}
    sent = upstream.requests[0]
    assert sent["path"] == "/v1/chat/completions" and sent["authorization"] == "Bearer upstream-secret"
    assert sent["body"]["model"] == "their-model" and sent["body"]["stream"] is True
    assert sent["body"]["stream_options"] == {"include_usage": True} and sent["body"]["max_tokens"] == 50
    assert sent["body"]["messages"] == [{"role": "user", "content": "Tell me something."}]
    row = UsageRecord.objects.get()
    assert (row.model, row.prompt_tokens, row.completion_tokens, row.status_code) == (REMOTE, 21, 30, 200)
    assert AllowedCount.objects.get(direction="output").count >= 1  # the output was moderated


def test_a_whole_chat_completion_and_a_text_completion_come_from_the_remote_model(api, settings, stubs):
    upstream = stubs(["Paris", " is the capital."], usage={"prompt_tokens": 9, "completion_tokens": 5})
    settings.SLUICE_REMOTE_MODELS = remote_config(upstream.url)
    body = api.post(CHAT, chat("What is the capital of France?")).json()
    assert body["choices"][0]["message"]["content"] == "Paris is the capital."
    assert body["model"] == REMOTE and body["usage"]["total_tokens"] == 14
    completion = api.post("/v1/completions", {"model": REMOTE, "prompt": "The capital of France", "max_tokens": 8})
    assert completion.json()["choices"][0]["text"] == "Paris is the capital."
    assert upstream.requests[1]["path"] == "/v1/completions"
    assert upstream.requests[1]["body"]["prompt"] == "The capital of France"


def test_logprobs_and_response_format_go_upstream_and_the_upstreams_logprobs_come_back(api, settings, stubs):
    upstream = stubs(["{\"a\"", ": 1}"], usage={"prompt_tokens": 9, "completion_tokens": 2})
    settings.SLUICE_REMOTE_MODELS = remote_config(upstream.url)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    body = api.post(CHAT, chat(logprobs=True, top_logprobs=2, response_format={
        "type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}})).json()
    assert body["choices"][0]["message"]["content"] == '{"a": 1}'
    assert [(t["token"], t["logprob"]) for t in body["choices"][0]["logprobs"]["content"]] == [('{"a"', -0.25), (": 1}", -0.25)]
    sent = upstream.requests[0]["body"]
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 2)
    assert sent["response_format"]["type"] == "json_schema" and sent["response_format"]["json_schema"]["schema"] == schema
    streamed = sse_payloads(api.post(CHAT, chat(logprobs=True, stream=True, response_format={"type": "json_object"})))
    tokens = [t["token"] for p in streamed[:-1] if p["choices"] and p["choices"][0]["logprobs"]
              for t in p["choices"][0]["logprobs"]["content"]]
    assert tokens == ['{"a"', ": 1}"]
    assert upstream.requests[1]["body"]["response_format"] == {"type": "json_object"}
    text = api.post("/v1/completions", {"model": REMOTE, "prompt": "x", "logprobs": 1}).json()["choices"][0]
    assert text["logprobs"]["tokens"] == ['{"a"', ": 1}"] and text["logprobs"]["text_offset"] == [0, 4]
    assert upstream.requests[2]["body"]["logprobs"] == 1


def test_without_upstream_usage_the_completion_is_counted_with_the_local_tokenizer(api, settings, stubs, fake_engine):
    upstream = stubs(["abc", "de"], usage=None)
    settings.SLUICE_REMOTE_MODELS = remote_config(upstream.url)
    body = api.post(CHAT, chat("Hi")).json()
    prompt = fake_engine.encode_chat([{"role": "user", "content": "Hi"}])  # the fake tokenizer: one token a char
    assert body["usage"] == {"prompt_tokens": len(prompt), "completion_tokens": 5, "total_tokens": len(prompt) + 5}


def test_without_a_tokenizer_admission_reserves_a_generous_estimate_and_settles_to_the_upstream(api, settings, stubs):
    upstream = stubs(["ok"], usage={"prompt_tokens": 4, "completion_tokens": 1})
    settings.SLUICE_REMOTE_MODELS = remote_config(upstream.url, tokenizer="none")
    api.post(CHAT, chat("Hi there, how are you today?", max_tokens=10))
    row = UsageRecord.objects.get()
    assert row.reserved_tokens > 4 + 10  # the estimate errs high ...
    assert (row.prompt_tokens, row.completion_tokens) == (4, 1)  # ... and the upstream's count is charged


def test_with_output_moderation_off_each_upstream_chunk_is_passed_on_as_it_arrives(api, settings, stubs):
    from moderation.models import ModerationPolicy

    ModerationPolicy.objects.create(name="no output checks", check_output=False)
    words = [f"w{i} " for i in range(10)]
    settings.SLUICE_REMOTE_MODELS = remote_config(stubs(words).url)
    payloads = sse_payloads(api.post(CHAT, chat(stream=True)))
    assert [p["choices"][0]["delta"]["content"] for p in payloads[1:-2]] == words


# --- moderation ---

def test_output_moderation_catches_a_threat_split_across_upstream_chunks(api, settings, stubs):
    pieces = [THREAT[i:i + 4] for i in range(0, len(THREAT), 4)]
    upstream = stubs(["Sure. ", *pieces, " That is all."], usage={"prompt_tokens": 10, "completion_tokens": 20})
    settings.SLUICE_REMOTE_MODELS = remote_config(upstream.url)
    payloads = sse_payloads(api.post(CHAT, chat("Please write a short poem about the sea.", stream=True)))
    text = streamed_text(payloads)
    assert "kill" not in text and "family" not in text
    assert payloads[-2]["choices"][0]["finish_reason"] == "content_filter"


def test_a_blocked_prompt_is_never_sent_upstream(api, settings, stubs):
    upstream = stubs()
    settings.SLUICE_REMOTE_MODELS = remote_config(upstream.url)
    response = api.post(CHAT, chat(THREAT))
    assert response.status_code == 400 and response.json()["error"]["code"] == "content_filter"
    assert upstream.requests == []


# --- several upstreams ---

def test_a_request_that_cannot_connect_is_retried_on_another_upstream(api, settings, stubs):
    upstream = stubs(["fine"], usage={"prompt_tokens": 3, "completion_tokens": 1})
    settings.SLUICE_REMOTE_MODELS = remote_config(dead_url(), upstream.url)
    statuses = [api.post(CHAT, chat()).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert len(upstream.requests) == 3
    dead, alive = engine_for(REMOTE).upstreams
    assert (dead.healthy, alive.healthy) == (False, True)


def test_a_stream_that_broke_after_its_first_tokens_is_not_retried_and_charges_what_arrived(api, settings, stubs):
    first, second = stubs(["one ", "two ", "three ", "four"]), stubs(["one ", "two ", "three ", "four"])
    for stub in (first, second):
        stub.break_after = 2
    settings.SLUICE_REMOTE_MODELS = remote_config(first.url, second.url)
    payloads = sse_payloads(api.post(CHAT, chat(stream=True)))
    assert len(first.requests) + len(second.requests) == 1
    assert streamed_text(payloads) == "one two "
    assert payloads[-1] == "[DONE]" and payloads[-2]["choices"][0]["finish_reason"] == "error"
    row = UsageRecord.objects.get()
    assert (row.status_code, row.error_code) == (502, "upstream_error")
    assert row.completion_tokens == len("one two ")  # what arrived, counted by the (fake) local tokenizer


def test_the_least_busy_upstream_gets_the_next_request_and_idle_ones_take_turns(stubs):
    first, second = stubs(["a"]), stubs(["b"])
    release = first.hold = second.hold = threading.Event()
    engine = RemoteEngine(model_id=REMOTE, urls=[first.url, second.url])
    params = SamplingParams(max_tokens=5)
    messages = [{"role": "user", "content": "hi"}]
    opened = []
    slow = threading.Thread(target=lambda: opened.append(engine.stream([1], params, messages=messages)))
    slow.start()
    assert wait_until(lambda: len(first.requests) + len(second.requests) == 1)
    busy = first if first.requests else second
    other = second if busy is first else first
    other.hold = None
    text = "".join(engine.stream([1], params, messages=messages))  # the busy one has a request in flight
    assert len(other.requests) == 1 and text in {"a", "b"}
    release.set()
    slow.join(5)
    assert "".join(opened[0]) in {"a", "b"}
    first.hold = second.hold = None
    before = (len(first.requests), len(second.requests))
    for _ in range(4):
        "".join(engine.stream([1], params, messages=messages))
    assert (len(first.requests) - before[0], len(second.requests) - before[1]) == (2, 2)
    assert engine.stats()["outstanding"] == 0
    engine.close()


def test_health_probes_take_an_upstream_out_of_rotation_and_bring_it_back(stubs):
    first, second = stubs(["a"]), stubs(["b"])
    engine = RemoteEngine(model_id=REMOTE, urls=[first.url, second.url])
    params, messages = SamplingParams(max_tokens=5), [{"role": "user", "content": "hi"}]
    first.models_status = 503
    engine.probe()
    assert [u.healthy for u in engine.upstreams] == [False, True]
    assert {"".join(engine.stream([1], params, messages=messages)) for _ in range(4)} == {"b"}
    first.models_status = 200
    engine.probe()
    assert [u.healthy for u in engine.upstreams] == [True, True]
    assert {"".join(engine.stream([1], params, messages=messages)) for _ in range(4)} == {"a", "b"}
    engine.close()


# --- errors ---

@pytest.mark.parametrize("reply", [
    b"SSH-2.0-OpenSSH_9.6\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n<html>oops</html>\n\n",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: {not json}\n\n",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\nhello",
], ids=["not-http", "html-stream", "bad-json", "not-a-stream"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_upstream_that_returns_garbage_gives_a_clean_502_that_names_no_address(api, settings, reply, stream):
    garbage = GarbageServer(reply)
    try:
        settings.SLUICE_REMOTE_MODELS = remote_config(garbage.url)
        response = api.post(CHAT, chat(stream=stream))
    finally:
        garbage.stop()
    assert response.status_code == 502
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "upstream_error"
    assert "127.0.0.1" not in error["message"] and str(garbage.port) not in error["message"]
    row = UsageRecord.objects.get()
    assert (row.prompt_tokens, row.completion_tokens, row.status_code) == (0, 0, 502)


def test_when_no_upstream_answers_the_client_gets_503_with_retry_after(api, settings):
    settings.SLUICE_REMOTE_MODELS = remote_config(dead_url(), dead_url())
    response = api.post(CHAT, chat())
    assert response.status_code == 503 and response["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "upstream_unavailable"
    assert "127.0.0.1" not in response.json()["error"]["message"]
    assert UsageRecord.objects.get().completion_tokens == 0


def test_an_overloaded_upstream_hands_the_request_to_another_and_all_overloaded_is_503(api, settings, stubs):
    busy, free = stubs(), stubs(["ok"])
    busy.status = 429
    settings.SLUICE_REMOTE_MODELS = remote_config(busy.url, free.url)
    assert all(api.post(CHAT, chat()).status_code == 200 for _ in range(2))
    free.status = 503
    response = api.post(CHAT, chat())
    assert response.status_code == 503 and response.json()["error"]["code"] == "upstream_overloaded"


def test_an_upstream_refusing_the_request_gives_a_400_without_its_addresses(api, settings, stubs):
    upstream = stubs()
    upstream.status = 400
    upstream.error_message = "prompt too long for http://10.1.2.3:8000/v1 on 10.1.2.3:8000"
    settings.SLUICE_REMOTE_MODELS = remote_config(upstream.url)
    response = api.post(CHAT, chat())
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "prompt too long" in message and "10.1.2.3" not in message


def test_an_upstream_that_is_silent_past_the_read_timeout_gives_504(api, settings, stubs):
    upstream = stubs()
    upstream.hold = threading.Event()
    settings.SLUICE_UPSTREAM_READ_TIMEOUT_S = 0.3
    settings.SLUICE_REMOTE_MODELS = remote_config(upstream.url)
    response = api.post(CHAT, chat(stream=True))
    assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"


def test_a_misconfigured_upstream_key_is_the_platforms_problem_502_not_the_clients(api, settings, stubs):
    upstream = stubs()
    upstream.status = 401
    settings.SLUICE_REMOTE_MODELS = remote_config(upstream.url)
    response = api.post(CHAT, chat())
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_error"


# --- fair sharing of a remote model's connections (inference.fair_queue.FairGate) ---

def test_one_account_cannot_take_every_connection_to_a_remote_model_once_another_needs_one(stubs):
    from inference.engines.base import EngineError
    from inference.fair_queue import AccountLimitExceeded, Share

    upstream = stubs(["a", "b", "c"])
    engine = RemoteEngine(model_id=REMOTE, urls=[upstream.url], max_connections=2, fair_burst=1)
    params, messages = SamplingParams(max_tokens=5), [{"role": "user", "content": "hi"}]

    def start(account):
        return engine.stream([1], params, messages=messages, share=Share(account))

    heavy = [start("a"), start("a")]  # alone, a may use every connection
    light = start("b")  # over the capacity, by the burst: b had none
    with pytest.raises(AccountLimitExceeded):  # while b has one, a is held to its half
        start("a")
    assert "".join(heavy.pop()) == "abc"
    with pytest.raises(AccountLimitExceeded):
        start("a")
    assert "".join(light) == "abc"
    heavy.append(start("a"))  # alone again
    with pytest.raises(EngineError) as full:
        start("a")
    assert (full.value.status_code, full.value.code) == (503, "upstream_overloaded")
    assert [row.account for row in engine.account_stats()] == ["a"]
    assert {row.account: row.running for row in engine.account_stats()} == {"a": 2}
    for stream in heavy:
        "".join(stream)
    assert engine.stats()["outstanding"] == 0 and engine._gate.outstanding == {}
    engine.close()


def test_an_account_over_its_concurrency_limit_at_a_remote_model_gets_a_429(api, settings, stubs, account):
    upstream = stubs(["slow", " reply"])
    upstream.pause_after = 1
    settings.SLUICE_REMOTE_MODELS = remote_config(upstream.url)
    account.max_concurrent_sequences = 1
    account.save()
    first = api.post(CHAT, chat(stream=True))
    assert first.status_code == 200
    refused = api.post(CHAT, chat(stream=True))
    assert refused.status_code == 429 and refused["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    upstream.resume.set()
    assert streamed_text(sse_payloads(first)) == "slow reply"
    assert api.post(CHAT, chat()).status_code == 200  # its place is free again
