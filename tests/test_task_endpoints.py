"""/v1/sentiment and /v1/qa: same auth, scopes, limits, quotas, usage rows, moderation and errors as generation."""

import pytest

from accounts.models import QuotaCounter, UsageRecord
from accounts.services import key_create
from moderation.models import ModerationEvent
from tests.conftest import Api

THREAT = "I am going to kill you and your whole family tonight."


def test_sentiment_labels_each_input_with_scores_summing_to_one(api):
    response = api.post("/v1/sentiment", {"input": ["A good film.", "Dull and slow."]})
    assert response.status_code == 200
    body = response.json()
    assert [item["label"] for item in body["data"]] == ["positive", "negative"]
    for item in body["data"]:
        assert set(item["scores"]) == {"negative", "positive"}
        assert abs(sum(item["scores"].values()) - 1) < 1e-6
    assert body["usage"]["prompt_tokens"] == len("A good film.") + len("Dull and slow.")
    row = UsageRecord.objects.get()
    assert (row.endpoint, row.prompt_tokens, row.completion_tokens, row.status_code) == ("sentiment", 26, 0, 200)


def test_sentiment_accepts_a_single_string(api):
    body = api.post("/v1/sentiment", {"input": "I love it"}).json()
    assert len(body["data"]) == 1 and body["data"][0]["label"] == "positive"


@pytest.mark.parametrize(
    "body", [{"input": ""}, {"input": ["fine", "  "]}, {"input": []}, {"input": ["x"] * 33}, {"input": 3}, {}]
)
def test_sentiment_refuses_bad_input_and_charges_nothing(api, body):
    response = api.post("/v1/sentiment", body)
    assert response.status_code == 400 and response.json()["error"]["param"] == "input"
    row = UsageRecord.objects.get()
    assert (row.prompt_tokens, row.status_code) == (0, 400)


def test_qa_answers_with_a_span_of_the_context(api):
    context = "The Eiffel Tower is in Paris. It was finished in 1889."
    body = api.post("/v1/qa", {"question": "Where is the Tower?", "context": context}).json()
    answer = body["data"][0]
    assert answer["answer"] == context[answer["start"]:answer["end"]]
    assert UsageRecord.objects.get().endpoint == "qa"


def test_qa_says_no_answer_when_the_context_lacks_it(api):
    body = api.post("/v1/qa", {"question": "Who painted it?", "context": "Cats sleep a lot."}).json()
    assert body["data"][0]["answer"] is None and body["data"][0]["start"] is None


def test_qa_takes_a_list_of_pairs(api):
    pairs = [{"question": "Where is the Tower?", "context": "The Tower is in Paris."},
             {"question": "What colour?", "context": "Nothing here."}]
    body = api.post("/v1/qa", {"input": pairs}).json()
    assert [item["index"] for item in body["data"]] == [0, 1]


@pytest.mark.parametrize(
    "body, param",
    [
        ({"question": "Where?"}, "context"),
        ({"question": "", "context": "x"}, "question"),
        ({"input": []}, "input"),
        ({"input": [{"question": "a"}]}, "input[0].context"),
        ({"input": [{"question": "q", "context": "c"}], "question": "q"}, "input"),
    ],
)
def test_qa_refuses_bad_input_clearly(api, body, param):
    response = api.post("/v1/qa", body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_a_context_over_the_window_is_refused_and_charges_nothing(api, fake_engine):
    fake_engine.context_window = 100
    response = api.post("/v1/qa", {"question": "Where?", "context": "word " * 40})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert all(c.used == 0 and c.reserved == 0 for c in QuotaCounter.objects.all())


def test_task_inputs_are_moderated(api):
    response = api.post("/v1/sentiment", {"input": [THREAT]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "content_filter"
    assert ModerationEvent.objects.get().endpoint == "sentiment"


def test_tasks_need_the_inference_scope_and_count_against_quotas(client, account, api):
    limited = Api(client, key_create(account=account, scopes=["moderation"]).plaintext)
    assert limited.post("/v1/sentiment", {"input": "good"}).status_code == 403
    account.daily_token_quota = 5
    account.save()
    response = api.post("/v1/sentiment", {"input": "a good long sentence"})
    assert response.status_code == 429 and response.json()["error"]["code"] == "insufficient_quota"
