"""The rule-based parts of extractive QA (no model): which spans are candidates, and which windows are read."""

from inference.tasks.qa import answer_type, candidate_spans, focus_candidates

CONTEXT = (
    "The Lindqvist Observatory was built in 1894 on a hill north of the town of Aberfeld. "
    "Its first director, Helena Brandt, discovered two comets there. "
    "In 1961 the old telescope was moved to the city museum."
)


def test_quantity_and_date_questions_want_a_number():
    for question in ("How many comets did she find?", "When was the observatory built?",
                     "In what year was the telescope moved?", "What percentage of the votes did he win?"):
        assert answer_type(question) == "number", question
    for question in ("Who was the first director?", "Where was the telescope moved?", "What is the Grotto?"):
        assert answer_type(question) is None, question


def test_spans_of_stopwords_only_are_never_candidates():
    spans = candidate_spans(CONTEXT)
    assert "The" not in spans and "Its" not in spans and "on a" not in spans
    assert "Helena Brandt" in spans and "The Lindqvist Observatory" in spans


def test_number_questions_get_only_spans_with_a_number_when_there_are_some():
    sentence = "Its first director, Helena Brandt, discovered two comets there."
    spans = candidate_spans(sentence, kind="number")
    assert "two" in spans and "two comets" in spans
    assert "Helena Brandt" not in spans
    assert all(sentence[a:b] == text for text, (a, b) in spans.items())


def test_number_questions_fall_back_to_every_span_when_the_window_has_no_number():
    sentence = "Its first director, Helena Brandt, discovered comets there."
    assert candidate_spans(sentence, kind="number") == candidate_spans(sentence)


def test_focus_candidates_rank_sentences_by_the_words_they_share_with_the_question():
    windows = focus_candidates("Where was the old telescope moved in 1961?", CONTEXT, size=1, count=2)
    assert CONTEXT[slice(*windows[0])] == "In 1961 the old telescope was moved to the city museum."
    assert len(windows) == 2 and windows[0] != windows[1]
    assert focus_candidates("Who?", "One sentence only.", size=1, count=3) == [(0, len("One sentence only."))]
