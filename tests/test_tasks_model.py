"""Sentiment and extractive QA on the real packaged model, on sentences and contexts written here."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytestmark = pytest.mark.model

CONTEXT = (
    "The Lindqvist Observatory was built in 1894 on a hill north of the town of Aberfeld. "
    "Its first director, Helena Brandt, discovered two comets there. "
    "In 1961 the old telescope was moved to the city museum."
)


@pytest.fixture(scope="session")
def model_and_tokenizer():
    import torch

    from inference.model_files import load_model_and_tokenizer, packaged_model_source

    cache_dir = Path(os.environ.get("SLUICE_MODEL_CACHE_DIR") or Path(tempfile.gettempdir()) / "sluice-models")
    return load_model_and_tokenizer(packaged_model_source(), dtype=torch.float32, cache_dir=cache_dir)


@pytest.fixture(scope="session")
def sentiments(model_and_tokenizer):
    from inference.tasks.sentiment import classify_sentiment

    texts = [
        "an absolute delight from start to finish , warm and very funny .",
        "a boring , badly written mess that wastes everyone 's time .",
        "I loved this movie, the acting was wonderful.",
        "Terrible. I want my money back.",
    ]
    return classify_sentiment(*model_and_tokenizer, texts)


def test_it_labels_clear_positive_and_negative_texts(sentiments):
    assert [result["label"] for result in sentiments] == ["positive", "negative", "positive", "negative"]


def test_its_sentiment_scores_are_a_distribution_over_the_labels(sentiments):
    from inference.tasks.sentiment import LABELS

    for result in sentiments:
        assert set(result["scores"]) == set(LABELS)
        assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-6)
        assert all(0.0 <= p <= 1.0 for p in result["scores"].values())
        assert result["scores"][result["label"]] == max(result["scores"].values())
        assert result["tokens"] > 0


def test_its_sentiment_is_deterministic_and_independent_of_the_batch(model_and_tokenizer, sentiments):
    from inference.tasks.sentiment import classify_sentiment

    alone = classify_sentiment(*model_and_tokenizer, ["Terrible. I want my money back."])[0]
    assert alone["label"] == sentiments[3]["label"]
    assert alone["scores"]["negative"] == pytest.approx(sentiments[3]["scores"]["negative"], abs=1e-4)


def test_it_answers_with_a_span_of_the_context(model_and_tokenizer):
    from inference.tasks.qa import answer_questions

    questions = ["Who was the first director of the observatory?", "When was the observatory built?"]
    results = answer_questions(*model_and_tokenizer, [(q, CONTEXT) for q in questions])
    for result in results:
        assert result["answer"] is not None
        assert CONTEXT[result["start"] : result["end"]] == result["answer"]
        assert 0.0 < result["score"] <= 1.0
        assert result["tokens"] > 0
    assert "Helena Brandt" in results[0]["answer"]
    assert "1894" in results[1]["answer"]


def test_it_gives_no_answer_when_the_context_does_not_have_one(model_and_tokenizer):
    from inference.tasks.qa import answer_questions

    [result] = answer_questions(*model_and_tokenizer, [("What is the population of Aberfeld?", CONTEXT)])
    assert result["answer"] is None
    assert result["start"] is None and result["end"] is None


def test_it_gives_no_answer_for_an_empty_context(model_and_tokenizer):
    from inference.tasks.qa import answer_questions

    assert answer_questions(*model_and_tokenizer, [("Who?", "  ")])[0]["answer"] is None
