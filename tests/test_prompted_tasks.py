"""/v1/sentiment and /v1/qa with ``model`` naming a generator: the task by prompting it, held to the same contract."""

import pytest

from accounts.models import UsageRecord
from inference.prompted_tasks import sentiment_from_reply, span_from_reply
from tests.conftest import MODEL
from tests.test_remote_engine import REMOTE, remote_config
from tests.upstream_stub import StubUpstream

THREAT = "I am going to kill you and your whole family tonight."
CONTEXT = "The Eiffel Tower stands in Paris. It was finished in 1889."


@pytest.fixture
def upstream(settings):
    stub = StubUpstream(["Positive"], usage={"prompt_tokens": 40, "completion_tokens": 1}).start()
    settings.SLUICE_REMOTE_MODELS = remote_config(stub.url)
    yield stub
    stub.stop()


def test_sentiment_on_a_remote_model_has_the_contracts_shape_and_is_metered(api, upstream):
    response = api.post("/v1/sentiment", {"input": ["A gorgeous film.", "Loved it."], "model": REMOTE})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model"] == REMOTE and len(body["data"]) == 2
    for index, item in enumerate(body["data"]):
        assert item["index"] == index and item["label"] == "positive"
        assert set(item["scores"]) == {"positive", "negative"} and sum(item["scores"].values()) == pytest.approx(1)
    assert len(upstream.requests) == 2
    sent = sorted((r["body"] for r in upstream.requests), key=lambda body: body["messages"][-1]["content"])
    assert all(body["temperature"] == 0.0 for body in sent)  # the two items go up side by side, in any order
    assert "A gorgeous film." in sent[0]["messages"][-1]["content"] and "Loved it." in sent[1]["messages"][-1]["content"]
    assert body["usage"] == {"prompt_tokens": 80, "completion_tokens": 2, "total_tokens": 82}
    row = UsageRecord.objects.get(request_id=response["x-request-id"])
    assert (row.endpoint, row.model, row.prompt_tokens, row.completion_tokens, row.status_code) == (
        "sentiment", REMOTE, 80, 2, 200)


def test_qa_on_a_remote_model_answers_with_a_span_of_the_context(api, upstream):
    upstream.chunks = ["in", " Paris."]
    body = api.post("/v1/qa", {"question": "Where is the tower?", "context": CONTEXT, "model": REMOTE}).json()
    item = body["data"][0]
    assert item["answer"] == "in Paris" and CONTEXT[item["start"]:item["end"]] == "in Paris"
    assert item["score"] == 1.0 and body["model"] == REMOTE


def test_a_qa_answer_the_upstream_invents_comes_back_as_null(api, upstream):
    upstream.chunks = ["London"]
    body = api.post("/v1/qa", {"input": [{"question": "Where is the tower?", "context": CONTEXT},
                                         {"question": "Who built it?", "context": CONTEXT}], "model": REMOTE}).json()
    assert [item["answer"] for item in body["data"]] == [None, None]
    assert all(item["start"] is None and item["end"] is None for item in body["data"])


def test_a_named_local_generator_runs_the_task_by_prompting_it(api, fake_engine):
    fake_engine.replies.extend(["negative.", "1889"])
    sentiment = api.post("/v1/sentiment", {"input": "Flat and lifeless.", "model": MODEL}).json()
    assert sentiment["data"][0]["label"] == "negative" and sentiment["data"][0]["scores"]["negative"] == 1.0
    qa = api.post("/v1/qa", {"question": "When was it finished?", "context": CONTEXT, "model": MODEL}).json()
    assert qa["data"][0]["answer"] == "1889" and qa["data"][0]["start"] == CONTEXT.index("1889")
    assert len(fake_engine.submitted) == 2 and all(params.temperature == 0.0 for _, params in fake_engine.submitted)


def test_without_a_model_the_default_task_model_answers(api, fake_engine, upstream):
    body = api.post("/v1/sentiment", {"input": "A great film."}).json()
    assert body["data"][0]["label"] == "positive" and fake_engine.submitted == [] and upstream.requests == []


def test_an_unknown_model_is_refused_and_charges_nothing(api, fake_engine):
    response = api.post("/v1/sentiment", {"input": "A great film.", "model": "no-such-model"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "model_not_found"
    assert fake_engine.submitted == []
    assert not UsageRecord.objects.filter(completion_tokens__gt=0).exists()
    assert all(row.prompt_tokens == 0 for row in UsageRecord.objects.all())


def test_inputs_are_moderated_before_the_upstream_sees_them(api, upstream):
    response = api.post("/v1/qa", {"question": "What now?", "context": THREAT, "model": REMOTE})
    assert response.status_code == 400 and response.json()["error"]["code"] == "content_filter"
    assert upstream.requests == []


def test_replies_are_parsed_into_the_contract():
    assert sentiment_from_reply("Positive!") == {"label": "positive", "scores": {"negative": 0.0, "positive": 1.0}}
    assert sentiment_from_reply("neither")["scores"] == {"negative": 0.5, "positive": 0.5}
    assert sentiment_from_reply("positive or negative")["scores"] == {"negative": 0.5, "positive": 0.5}
    assert span_from_reply('"paris".', CONTEXT) == (CONTEXT.index("Paris"), CONTEXT.index("Paris") + 5)
    assert span_from_reply("unknown", CONTEXT) is None
    assert span_from_reply("", CONTEXT) is None
    assert span_from_reply("The tower is in Paris", CONTEXT) is None  # not a span: never an invention
