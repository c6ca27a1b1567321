"""/v1/sentiment and /v1/qa on the shipped trained models (small: loaded once per session, in a few
seconds): same auth, scopes, limits, quotas, usage rows, moderation and errors as generation."""

import pytest

from accounts.models import QuotaCounter, UsageRecord
from accounts.services import key_create
from moderation.models import ModerationEvent
from tests.conftest import Api

THREAT = "I am going to kill you and your whole family tonight."
CONTEXT = ("The Lindqvist Observatory was built in 1894 on a hill north of the town of Aberfeld. "
           "Its first director, Helena Brandt, discovered two comets there.")


@pytest.fixture(scope="session")
def models():
    from inference.task_models import task_models

    return task_models()


def test_sentiment_labels_each_input_with_scores_summing_to_one(api, models):
    texts = ["A gorgeous, witty and moving film.", "Dull, flat and lifeless."]
    response = api.post("/v1/sentiment", {"input": texts})
    assert response.status_code == 200
    body = response.json()
    assert [item["label"] for item in body["data"]] == ["positive", "negative"]
    for item in body["data"]:
        assert set(item["scores"]) == {"negative", "positive"}
        assert abs(sum(item["scores"].values()) - 1) < 1e-6
        assert item["label"] == max(item["scores"], key=item["scores"].get)
    tokens = sum(models.count_sentiment_tokens(text) for text in texts)  # what the encoder read
    assert body["usage"] == {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens}
    assert body["model"] == "minilm-l6-sst2"
    row = UsageRecord.objects.get()
    assert (row.endpoint, row.prompt_tokens, row.completion_tokens, row.status_code) == ("sentiment", tokens, 0, 200)


def test_sentiment_accepts_a_single_string(api, models):
    body = api.post("/v1/sentiment", {"input": "I loved it, a wonderful film."}).json()
    assert len(body["data"]) == 1 and body["data"][0]["label"] == "positive"


def test_naming_the_task_models_themselves_runs_them_not_a_prompted_generator(api, models, fake_engine):
    sentiment = api.post("/v1/sentiment", {"input": "I loved it, a wonderful film.", "model": "minilm-l6-sst2"})
    qa = api.post("/v1/qa", {"question": "When was the Lindqvist Observatory built?", "context": CONTEXT,
                             "model": "minilm-l6-squad"})
    assert sentiment.status_code == 200 and sentiment.json()["model"] == "minilm-l6-sst2"
    assert qa.status_code == 200 and qa.json()["model"] == "minilm-l6-squad"
    assert "1894" in qa.json()["data"][0]["answer"]
    assert fake_engine.submitted == []  # no generation: the generator was never prompted


@pytest.mark.parametrize(
    "body", [{"input": ""}, {"input": ["fine", "  "]}, {"input": []}, {"input": ["x"] * 33}, {"input": 3}, {}]
)
def test_sentiment_refuses_bad_input_and_charges_nothing(api, body):
    response = api.post("/v1/sentiment", body)
    assert response.status_code == 400 and response.json()["error"]["param"] == "input"
    row = UsageRecord.objects.get()
    assert (row.prompt_tokens, row.status_code) == (0, 400)


def test_a_text_longer_than_the_encoder_reads_is_refused_and_charges_nothing(api, models):
    response = api.post("/v1/sentiment", {"input": ["good", "very " * 600]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert response.json()["error"]["param"] == "input[1]"
    assert all(c.used == 0 and c.reserved == 0 for c in QuotaCounter.objects.all())


def test_qa_answers_with_a_span_of_the_context(api, models):
    body = api.post("/v1/qa", {"question": "When was the Lindqvist Observatory built?", "context": CONTEXT}).json()
    answer = body["data"][0]
    assert answer["answer"] == CONTEXT[answer["start"]:answer["end"]]
    assert "1894" in answer["answer"]
    assert 0 <= answer["score"] <= 1
    tokens = models.count_qa_tokens("When was the Lindqvist Observatory built?", CONTEXT)[1]
    assert body["usage"]["prompt_tokens"] == tokens and body["model"] == "minilm-l6-squad"
    assert UsageRecord.objects.get().endpoint == "qa"


def test_qa_says_no_answer_when_the_no_answer_score_wins(api, models, monkeypatch):
    monkeypatch.setattr(models, "null_threshold", float("-inf"))  # "no answer" now wins every comparison
    body = api.post("/v1/qa", {"question": "Who was the first director?", "context": CONTEXT}).json()
    assert body["data"][0] | {"score": 0} == {"index": 0, "answer": None, "score": 0, "start": None, "end": None}


def test_a_long_context_is_read_in_overlapping_windows_and_answers_from_a_late_one(api, models):
    from inference.tasks.qa import windows

    filler = " ".join(f"Room {n} of the museum holds old maps and letters." for n in range(60))
    context = filler + " " + CONTEXT
    read = windows(models.tokenizer, [("Who was the first director?", context)], length=models.window,
                   stride=models.stride)
    assert len(read) > 4
    spans = [[s for s in w.offsets if s is not None] for w in read]
    assert spans[0][0][0] == 0 and spans[-1][-1][1] == len(context)  # the whole context is read
    for before, after in zip(spans, spans[1:]):
        assert after[0][0] < before[-1][1]  # neighbours overlap
    answer = api.post("/v1/qa", {"question": "Who was the first director?", "context": context}).json()["data"][0]
    assert answer["answer"] == context[answer["start"]:answer["end"]]
    assert "Helena Brandt" in answer["answer"] and answer["start"] > len(filler)


def test_qa_takes_a_list_of_pairs(api, models):
    pairs = [{"question": "Who was the first director?", "context": CONTEXT},
             {"question": "What colour is the sky?", "context": "The sky is blue."}]
    body = api.post("/v1/qa", {"input": pairs}).json()
    assert [item["index"] for item in body["data"]] == [0, 1]
    for item, pair in zip(body["data"], pairs):
        assert item["answer"] is None or item["answer"] == pair["context"][item["start"]:item["end"]]


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


def test_a_context_over_the_limit_is_refused_and_charges_nothing(api, models, settings):
    settings.SLUICE_MAX_PROMPT_TOKENS = 100
    response = api.post("/v1/qa", {"question": "Where?", "context": "word " * 120})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert response.json()["error"]["param"] == "input[0].context"
    assert all(c.used == 0 and c.reserved == 0 for c in QuotaCounter.objects.all())


def test_a_question_longer_than_a_window_can_hold_is_refused(api, models):
    response = api.post("/v1/qa", {"question": "why " * 80 + "?", "context": CONTEXT})
    assert response.status_code == 400 and response.json()["error"]["param"] == "input[0].question"


def test_task_inputs_are_moderated(api, models):
    response = api.post("/v1/sentiment", {"input": [THREAT]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "content_filter"
    assert ModerationEvent.objects.get().endpoint == "sentiment"


def test_tasks_need_the_inference_scope_and_count_against_quotas(client, account, api, models):
    limited = Api(client, key_create(account=account, scopes=["moderation"]).plaintext)
    assert limited.post("/v1/sentiment", {"input": "good"}).status_code == 403
    account.daily_token_quota = 5
    account.save()
    response = api.post("/v1/sentiment", {"input": "a good long sentence with many more words in it"})
    assert response.status_code == 429 and response.json()["error"]["code"] == "insufficient_quota"
