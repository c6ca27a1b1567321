"""The moderation detection core: plain functions, no Django.

The real components load once for the whole session (the first ``detect`` call pays it, a few seconds).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from moderation.categories import CATEGORIES, PARENTS
from moderation.detectors import DEFAULT_THRESHOLD, Detection, Span, count_tokens, detect, detect_many


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # On a busy two-core machine, two intra-op threads wait on each other at every operation: a detect
    # call took 0.5 s instead of 7 ms. The setting is process-wide, so it is restored afterwards.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

OBVIOUS = {
    "harassment": "You are a pathetic, worthless idiot and everybody hates you.",
    "harassment/threatening": "I know where you live and I'm going to kill you.",
    "hate": "Muslims are subhuman vermin and don't belong in this country.",
    "hate/threatening": "We should round up all the Jews and shoot them.",
    "illicit": "How can I shoplift from the mall without getting caught?",
    "illicit/violent": "Tell me how to make a pipe bomb at home.",
    "self-harm": "Cutting makes the pain go away, you should all try it.",
    "self-harm/intent": "I can't take it anymore, I'm going to kill myself tonight.",
    "self-harm/instructions": "How many sleeping pills do I need to take to overdose and die?",
    "sexual": "She moaned as he pulled off her panties and they had sex on the couch.",
    "violence": "He beat the old man with a baseball bat until he stopped moving.",
    "violence/graphic": "Blood gushed from his severed arm and his entrails spilled onto the floor.",
}
# sexual/minors is checked through a rule combination, without writing such content: see its test.

BENIGN = [
    "Say something.",
    "Continue.",
    "Can you give me a recipe for a vegetable lasagna?",
    "The meeting moved to Thursday at 3 pm, please update the calendar.",
    "How do I sort a list of dictionaries by a key in Python?",
    "My grandmother taught me to knit when I was seven.",
    "What were the main causes of the First World War?",
    "If you are thinking about suicide, please reach out to a crisis line right away.",
    "How often should adults get a tetanus booster?",
    "I finally beat the last level of the game last night!",
]


def flagged(detection: Detection) -> set[str]:
    return {category for category, score in detection.scores.items() if score >= DEFAULT_THRESHOLD}


def test_categories_are_the_thirteen_openai_names_in_order():
    assert CATEGORIES == (
        "harassment",
        "harassment/threatening",
        "hate",
        "hate/threatening",
        "illicit",
        "illicit/violent",
        "self-harm",
        "self-harm/intent",
        "self-harm/instructions",
        "sexual",
        "sexual/minors",
        "violence",
        "violence/graphic",
    )


def test_it_scores_every_category_within_zero_and_one():
    detection = detect("You are a pathetic idiot.")
    assert set(detection.scores) == set(CATEGORIES)
    assert all(0.0 <= score <= 1.0 for score in detection.scores.values())
    assert 0.0 < DEFAULT_THRESHOLD < 1.0


def test_it_gives_the_same_scores_for_the_same_text():
    text = "I will find you and break your legs, you rat."
    first, second = detect(text), detect(text)
    assert first == second


@pytest.mark.parametrize("category", sorted(OBVIOUS))
def test_it_flags_an_obvious_case_of_each_category(category):
    detection = detect(OBVIOUS[category])
    assert detection.scores[category] >= DEFAULT_THRESHOLD, detection.scores


@pytest.mark.parametrize("text", BENIGN)
def test_it_flags_nothing_in_benign_text(text):
    assert flagged(detect(text)) == set(), detect(text).scores


def test_it_flags_sexual_content_mentioning_a_minor_as_sexual_minors():
    # The explicit words come from the sexual rule and the age from the minor rule; no example
    # sentence of this kind is written anywhere in the detector.
    detection = detect("porn with a 14 year old")
    assert detection.scores["sexual/minors"] >= DEFAULT_THRESHOLD
    assert any(span.category == "sexual/minors" for span in detection.spans)
    assert detect("My 14 year old son started high school.").scores["sexual/minors"] < DEFAULT_THRESHOLD


def test_a_flagged_subcategory_flags_its_parent():
    detection = detect(OBVIOUS["self-harm/intent"])
    for child, parent in PARENTS.items():
        assert detection.scores[parent] >= detection.scores[child]


def test_spans_point_at_the_offending_words():
    text = "Thanks for the help. Honestly, you are a fucking idiot."
    detection = detect(text)
    words = {text[span.start : span.end].lower() for span in detection.spans if span.category == "harassment"}
    assert {"fucking", "idiot"} <= words
    assert all(isinstance(span, Span) and 0 <= span.start < span.end <= len(text) for span in detection.spans)


def test_spans_cover_a_threat():
    text = "Nice weather today. I'm going to stab you tomorrow."
    detection = detect(text)
    threat = [text[s.start : s.end] for s in detection.spans if s.category == "harassment/threatening"]
    assert threat and all("stab you" in piece for piece in threat)
    assert all(span.start >= text.index("I'm") for span in detection.spans)


def test_benign_text_has_no_spans():
    assert detect("Could you recommend a good science fiction novel?").spans == ()


def test_swearing_at_nobody_is_not_harassment():
    assert detect("Shit, I forgot my keys again.").scores["harassment"] < DEFAULT_THRESHOLD
    assert detect("Shit, you forgot my keys again, you idiot.").scores["harassment"] >= DEFAULT_THRESHOLD


def test_detect_many_equals_detect():
    texts = list(OBVIOUS.values()) + BENIGN + ["", "   ", "ok", "A much longer text. " * 80]
    assert detect_many(texts) == [detect(text) for text in texts]
    assert detect_many([]) == []


def test_empty_text_scores_low():
    detection = detect("")
    assert flagged(detection) == set()
    assert detection.spans == ()


def test_threads_calling_at_once_get_the_same_result():
    from concurrent.futures import ThreadPoolExecutor

    text = "Go cry somewhere else, you spineless coward."
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(detect, [text] * 8))
    assert all(result == results[0] for result in results)


def test_it_counts_tokens_in_the_encoder_vocabulary():
    assert count_tokens("") == 0
    assert count_tokens("hello world") == 2
    assert count_tokens("word " * 1000) == 1000


def test_the_stored_heads_were_fitted_on_the_current_examples():
    import numpy as np

    from moderation.detectors import HEADS_FILE, examples_digest

    with np.load(HEADS_FILE) as stored:
        assert str(stored["examples_digest"]) == examples_digest(), "run moderation/data/build_heads.py"


def test_the_profanity_model_gives_profanity_checks_own_numbers(settings, tmp_path):
    from profanity_check import predict_prob, profanity_check

    from moderation.detectors import _Profanity

    settings.SLUICE_MODEL_CACHE_DIR = str(tmp_path)
    texts = ["", "the and of", "You are a fucking idiot.", "Have a lovely day, friend!", "shit shit shit",
             "ÜBER-cool don't  STOP__now 42x", "a\tb\nc i'm it's"]
    built = _Profanity()  # from profanity-check's pickles, then cached
    assert [p.name for p in tmp_path.iterdir()][0].startswith("profanity-")
    cached = _Profanity()  # from the cache: no scikit-learn
    analyze = profanity_check.vectorizer.build_analyzer()
    for ours in (built, cached):
        assert [ours._analyze(text) for text in texts] == [analyze(text) for text in texts]
        assert [ours.probability(text) for text in texts] == pytest.approx(list(predict_prob(texts)), abs=1e-12)
    assert built.offensive_words == cached.offensive_words and "idiot" in cached.offensive_words


def test_the_encoder_forward_pass_matches_the_reference_model():
    import torch
    from transformers import AutoModel

    from moderation.detectors import _Bert, _encoder_dir

    reference = AutoModel.from_pretrained(_encoder_dir()).eval()
    ours = _Bert(AutoModel.from_pretrained(_encoder_dir()).eval()).eval()
    ids = torch.tensor([[101, 7592, 2088, 2003, 1037, 3231, 102], [101, 7592, 102, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.inference_mode():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, mask)
    assert torch.allclose(got[mask.bool()], expected[mask.bool()], atol=1e-4)


def test_a_long_text_is_read_in_bounded_chunks_that_cover_it():
    from moderation.detectors import CHUNK_TOKENS, MAX_CHUNKS, _chunks

    text = " ".join(f"Sentence number {i} talks about the weather and the garden." for i in range(60))
    chunks = _chunks(text)
    assert 1 < len(chunks) <= MAX_CHUNKS
    assert all(0 < len(chunk.ids) <= CHUNK_TOKENS for chunk in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    assert _chunks("A short one.")[0].end == len("A short one.")
