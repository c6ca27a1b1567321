"""logprobs / top_logprobs through the official openai client, whole and streamed, on the fake engine (which
gives each token probability 1/2 and its alternatives 1/4, 1/8, ...: the next characters), and bad values
refused before anything is charged. The real model's figures are checked in tests/test_structured_real_model.py."""

import math

import openai
import pytest

from tests.conftest import MODEL
from tests.test_bad_input import CHAT, assert_refused_and_free, chat, metered  # noqa: F401
from tests.test_openai_client import keep_the_test_transaction_open, openai_client  # noqa: F401

HALF = -math.log(2)


def ask(client, **extra):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], **extra)


def test_chat_logprobs_give_each_token_with_its_top_alternatives(openai_client, fake_engine):
    fake_engine.replies.append("Héllo")
    choice = ask(openai_client, logprobs=True, top_logprobs=3).choices[0]
    assert choice.message.content == "Héllo"
    tokens = choice.logprobs.content
    assert [t.token for t in tokens] == list("Héllo")
    assert tokens[1].bytes == list("é".encode())
    for token in tokens:
        assert token.logprob == pytest.approx(HALF)
        assert [alt.logprob for alt in token.top_logprobs] == pytest.approx([HALF, 2 * HALF, 3 * HALF])
        assert token.top_logprobs[0].token == token.token
        assert token.top_logprobs[1].token == chr(ord(token.token) + 1)
    params = fake_engine.submitted[0][1]
    assert (params.logprobs, params.top_logprobs) == (True, 3)


def test_chat_logprobs_without_top_logprobs_give_no_alternatives_and_none_unless_asked(openai_client, fake_engine):
    fake_engine.replies.extend(["ab", "ab"])
    tokens = ask(openai_client, logprobs=True).choices[0].logprobs.content
    assert [(t.token, t.top_logprobs) for t in tokens] == [("a", []), ("b", [])]
    assert ask(openai_client).choices[0].logprobs is None


def test_streamed_chat_logprobs_arrive_with_the_text_they_belong_to(openai_client, fake_engine):
    reply = "A streamed reply, long enough to come in several chunks."
    fake_engine.replies.append(reply)
    text, tokens = "", []
    for chunk in ask(openai_client, logprobs=True, top_logprobs=2, stream=True):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        text += choice.delta.content or ""
        if choice.logprobs and choice.logprobs.content:
            tokens.extend(choice.logprobs.content)
            assert "".join(t.token for t in tokens) == text[: len("".join(t.token for t in tokens))]
            assert len("".join(t.token for t in tokens)) <= len(text)  # never ahead of the text sent
    assert text == reply
    assert "".join(t.token for t in tokens) == reply
    assert all(len(t.top_logprobs) == 2 for t in tokens)


def test_completion_logprobs_take_the_legacy_shape(openai_client, fake_engine):
    fake_engine.replies.append("xyz")
    choice = openai_client.completions.create(model=MODEL, prompt="Hi", logprobs=2).choices[0]
    assert choice.text == "xyz"
    assert choice.logprobs.tokens == ["x", "y", "z"]
    assert choice.logprobs.token_logprobs == pytest.approx([HALF] * 3)
    assert choice.logprobs.text_offset == [0, 1, 2]
    assert choice.logprobs.top_logprobs[0] == pytest.approx({"x": HALF, "y": 2 * HALF})
    fake_engine.replies.append("xyz")
    streamed = [c.choices[0].logprobs for c in openai_client.completions.create(
        model=MODEL, prompt="Hi", logprobs=0, stream=True) if c.choices and c.choices[0].logprobs]
    assert sum((lp.tokens for lp in streamed), []) == ["x", "y", "z"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path, extra, param", [
    (CHAT, {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    (CHAT, {"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    (CHAT, {"logprobs": False, "top_logprobs": 3}, "top_logprobs"),
    (CHAT, {"top_logprobs": 2}, "top_logprobs"),
    (CHAT, {"logprobs": 1}, "logprobs"),
    ("/v1/completions", {"logprobs": 6}, "logprobs"),
    ("/v1/completions", {"logprobs": True}, "logprobs"),
])
def test_logprobs_out_of_range_are_a_400_and_cost_nothing(api, fake_engine, metered, path, extra, param, stream):
    body = chat(stream=stream) if path == CHAT else {"model": MODEL, "prompt": "Hi", "stream": stream}
    assert_refused_and_free(api.post(path, {**body, **extra}), fake_engine, param=param)


def test_the_client_sees_a_bad_top_logprobs_as_a_bad_request(openai_client, fake_engine):
    with pytest.raises(openai.BadRequestError) as refused:
        ask(openai_client, logprobs=True, top_logprobs=25)
    assert refused.value.body["param"] == "top_logprobs"
