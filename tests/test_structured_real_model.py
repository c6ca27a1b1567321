"""The real model behind a real server, through the official openai client: log-probabilities consistent with
greedy choice, JSON-schema outputs that parse and validate on 20 prompts (streamed and not, sent at once so
they share the batch), and a forced tool call whose arguments validate."""

import json
import math
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest

from tests.servers import Server, manage, server_env

pytestmark = [pytest.mark.model, pytest.mark.server]

MODEL = "SmolLM2-135M-Instruct"
CREATURE = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 24},
        "legs": {"type": "integer", "minimum": 0, "maximum": 8},
        "habitat": {"enum": ["land", "sea", "air"]},
    },
    "required": ["name", "legs", "habitat"],
    "additionalProperties": False,
}
SUBJECTS = ["a cat", "a shark", "an eagle", "a spider", "a horse", "an octopus", "a penguin", "a bee", "a frog",
            "a dolphin", "an ant", "a crab", "a parrot", "a snake", "a camel", "a bat", "a whale", "a beetle",
            "an owl", "a lobster"]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder = tmp_path_factory.mktemp("structured")
    env = server_env(DATABASE_URL=f"sqlite:///{folder / 'db.sqlite3'}", CACHE_URL="locmem://")
    manage(env, "migrate", "--noinput")
    key = manage(env, "create_api_key", "--account", "structured").strip().splitlines()[-1]
    server = Server(env, log_path=folder / "server.log").start()
    yield openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=300)
    server.stop()


def test_top_logprobs_give_three_alternatives_led_by_the_greedy_choice(client):
    question = [{"role": "user", "content": "What is the capital of France?"}]
    reply = client.chat.completions.create(model=MODEL, messages=question, temperature=0, max_tokens=10,
                                           logprobs=True, top_logprobs=3)
    tokens = reply.choices[0].logprobs.content
    assert "".join(t.token for t in tokens) == reply.choices[0].message.content
    assert len(tokens) == reply.usage.completion_tokens
    for token in tokens:
        assert len(token.top_logprobs) == 3
        values = [alternative.logprob for alternative in token.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert token.top_logprobs[0].token == token.token  # greedy: the chosen token is the most likely
        assert token.logprob == pytest.approx(values[0]) and token.logprob <= 0
        assert sum(math.exp(v) for v in values) <= 1.0 + 1e-6
        assert bytes(token.bytes).decode("utf-8", errors="replace") == token.token
    streamed = [t for chunk in client.chat.completions.create(
        model=MODEL, messages=question, temperature=0, max_tokens=10, logprobs=True, top_logprobs=3, stream=True)
        if chunk.choices and chunk.choices[0].logprobs for t in chunk.choices[0].logprobs.content or []]
    assert [(t.token, round(t.logprob, 3)) for t in streamed] == [(t.token, round(t.logprob, 3)) for t in tokens]


def _creature(client, subject: str, stream: bool) -> tuple[str, str]:
    request = dict(model=MODEL, max_tokens=60, temperature=0.7, seed=len(subject),
                   messages=[{"role": "user", "content": f"Describe {subject} as JSON: its name, how many legs it "
                                                         "has and where it lives."}],
                   response_format={"type": "json_schema",
                                    "json_schema": {"name": "creature", "schema": CREATURE, "strict": True}})
    if not stream:
        choice = client.chat.completions.create(**request).choices[0]
        return choice.message.content, choice.finish_reason
    text, finish = "", None
    for chunk in client.chat.completions.create(**request, stream=True):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return text, finish


def test_a_json_schema_reply_parses_and_validates_on_twenty_prompts_streamed_and_not(client):
    cases = [(subject, stream) for subject in SUBJECTS for stream in (False, True)]
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda case: _creature(client, *case), cases))
    for (subject, stream), (text, finish) in zip(cases, replies):
        assert finish == "stop", (subject, stream, text)
        jsonschema.validate(json.loads(text), CREATURE)
    assert len({text for text, _ in replies}) > 5  # twenty prompts, not one canned answer


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 40},
        "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"], "additionalProperties": False}}}


@pytest.mark.parametrize("stream", [False, True])
def test_a_named_tool_choice_returns_a_call_whose_arguments_validate(client, stream):
    request = dict(model=MODEL, max_tokens=40, temperature=0, tools=[WEATHER],
                   tool_choice={"type": "function", "function": {"name": "get_weather"}},
                   messages=[{"role": "user", "content": "What is the weather like in Paris today?"}])
    if stream:
        name, arguments, finish = "", "", None
        for chunk in client.chat.completions.create(**request, stream=True):
            for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                name += call.function.name or ""
                arguments += call.function.arguments or ""
            finish = (chunk.choices[0].finish_reason if chunk.choices else None) or finish
    else:
        choice = client.chat.completions.create(**request).choices[0]
        [call] = choice.message.tool_calls
        name, arguments, finish = call.function.name, call.function.arguments, choice.finish_reason
    assert (name, finish) == ("get_weather", "tool_calls")
    jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])
