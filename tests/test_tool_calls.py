"""tools / tool_choice through the official openai client on the fake engine (its replies stand for what a
model would write): what the prompt and grammar say, calls read back whole and streamed, tool results put back
into the conversation, bad input refused before anything is charged. The real model's forced call is checked
in tests/test_structured_real_model.py."""

import json

import pytest

from inference.tool_calls import ToolCallParser, tool_calls_from_events, tool_plan_for
from tests.conftest import MODEL
from tests.test_bad_input import CHAT, assert_refused_and_free, chat, metered  # noqa: F401
from tests.test_openai_client import keep_the_test_transaction_open, openai_client  # noqa: F401

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


def ask(client, **extra):
    return client.chat.completions.create(model=MODEL, messages=QUESTION, tools=[WEATHER, TIME], **extra)


def prompt_of(fake_engine, index=0) -> str:
    return "".join(chr(i) for i in fake_engine.submitted[index][0])


def test_auto_puts_the_tools_in_the_prompt_and_reads_a_tagged_call_back(openai_client, fake_engine):
    fake_engine.replies.append('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n</tool_call>')
    choice = ask(openai_client).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "c"}
    prompt = prompt_of(fake_engine)
    assert "<tools>" in prompt and '"name": "get_weather"' in prompt and '"name": "get_time"' in prompt
    assert fake_engine.submitted[0][1].grammar is None  # auto: the model decides, unconstrained


def test_auto_keeps_a_plain_answer_and_an_invalid_call_as_content(openai_client, fake_engine):
    fake_engine.replies.extend(["It is sunny.", '<tool_call>{"name": "unknown", "arguments": {}}</tool_call>'])
    first = ask(openai_client).choices[0]
    assert (first.message.content, first.message.tool_calls, first.finish_reason) == ("It is sunny.", None, "stop")
    second = ask(openai_client).choices[0]
    assert second.message.tool_calls is None and "unknown" in second.message.content


def test_a_named_function_is_forced_by_its_parameters_grammar_and_the_prompt_opens_its_call(openai_client, fake_engine):
    fake_engine.replies.append('{"city": "Paris", "unit": "c"}')
    choice = ask(openai_client, tool_choice={"type": "function", "function": {"name": "get_weather"}}).choices[0]
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris", "unit": "c"}
    assert prompt_of(fake_engine).endswith('<tool_call>\n{"name": "get_weather", "arguments": ')
    assert json.loads(fake_engine.submitted[0][1].grammar.schema) == WEATHER["function"]["parameters"]


def test_required_is_forced_to_one_call_of_one_of_the_tools(openai_client, fake_engine):
    fake_engine.replies.append('{"name": "get_time", "arguments": {"zone": "CET"}}')
    choice = ask(openai_client, tool_choice="required").choices[0]
    [call] = choice.message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_time", {"zone": "CET"})
    grammar = json.loads(fake_engine.submitted[0][1].grammar.schema)
    assert [option["properties"]["name"]["const"] for option in grammar["anyOf"]] == ["get_weather", "get_time"]
    assert prompt_of(fake_engine).endswith("<assistant><tool_call>\n")


def test_none_leaves_the_tools_out(openai_client, fake_engine):
    fake_engine.replies.append("Plain.")
    choice = ask(openai_client, tool_choice="none").choices[0]
    assert choice.message.content == "Plain." and "<tools>" not in prompt_of(fake_engine)


@pytest.mark.parametrize("tool_choice", ["auto", {"type": "function", "function": {"name": "get_weather"}}])
def test_a_streamed_call_arrives_as_tool_call_deltas_the_client_can_join(openai_client, fake_engine, tool_choice):
    arguments = '{"city": "Paris", "unit": "c"}'
    fake_engine.replies.append("Let me check. <tool_call>\n" + json.dumps({"name": "get_weather", "arguments": json.loads(arguments)})
                               + "\n</tool_call>" if tool_choice == "auto" else arguments)
    content, calls, finish = "", {}, None
    for chunk in ask(openai_client, tool_choice=tool_choice, stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for call in delta.tool_calls or []:
            joined = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
            joined["id"] = call.id or joined["id"]
            joined["name"] += (call.function.name or "") if call.function else ""
            joined["arguments"] += (call.function.arguments or "") if call.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0] and calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "unit": "c"}
    assert content == ("Let me check. " if tool_choice == "auto" else "")


def test_tool_results_and_earlier_calls_go_back_into_the_prompt(openai_client, fake_engine):
    fake_engine.replies.append("It is 18 degrees in Paris.")
    messages = QUESTION + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 18}'},
    ]
    reply = openai_client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
    assert reply.choices[0].message.content == "It is 18 degrees in Paris."
    prompt = prompt_of(fake_engine)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n</tool_call>' in prompt
    assert '<tool><tool_response>\n{"temperature": 18}\n</tool_response>' in prompt  # the fake's template


def test_the_parser_holds_back_what_could_be_the_start_of_a_call():
    parser = ToolCallParser(tool_plan_for([WEATHER], "auto", None))
    events = []
    for piece in ["Sure <tool", "_call>", '{"name": "get_weather", "arguments": {"city": "Rome", "unit": "c"}}', "</tool_call> done"]:
        events.extend(parser.push(piece))
    content, calls = tool_calls_from_events(events + parser.finish())
    assert content == "Sure  done" and json.loads(calls[0]["function"]["arguments"])["city"] == "Rome"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("extra, param", [
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [WEATHER, WEATHER]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "foo"}}}]},
     "tools[0].function.parameters"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
])
def test_bad_tools_are_a_400_and_cost_nothing(api, fake_engine, metered, extra, param, stream):
    assert_refused_and_free(api.post(CHAT, chat(stream=stream, **extra)), fake_engine, param=param)


def test_the_clients_own_reply_message_can_be_sent_back_with_the_tools_result(openai_client, fake_engine):
    fake_engine.replies.extend(['{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}', "18 degrees."])
    reply = ask(openai_client, tool_choice="required")
    call = reply.choices[0].message.tool_calls[0]
    messages = QUESTION + [reply.choices[0].message, {"role": "tool", "tool_call_id": call.id, "content": "18"}]
    answer = openai_client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
    assert answer.choices[0].message.content == "18 degrees."
    assert '"city": "Paris"' in prompt_of(fake_engine, 1) and "<tool_response>\n18\n" in prompt_of(fake_engine, 1)
