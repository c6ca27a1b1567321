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


# Known misses of the trained classifier, all in categories the training data barely covers (see
# moderation/data/README.md): 30 self-harm rows, no violent narratives, no graphic violence. Strict, so a
# retrained classifier that catches one of them makes this list shrink.
KNOWN_MISSES = {
    "self-harm": "30 self-harm training rows, all questions; an encouraging statement is not among them",
    "self-harm/instructions": "scores 0.42: under the threshold, with self-harm itself thin",
    "violence": "no narrated violence in the training data (only requests and threats)",
    "violence/graphic": "gated on the violence score, which misses the narrated scene",
}


@pytest.mark.parametrize(
    "category",
    [
        pytest.param(c, marks=pytest.mark.xfail(reason=KNOWN_MISSES[c], strict=True)) if c in KNOWN_MISSES else c
        for c in sorted(OBVIOUS)
    ],
)
def test_it_flags_an_obvious_case_of_each_category(category):
    detection = detect(OBVIOUS[category])
    assert detection.scores[category] >= DEFAULT_THRESHOLD, detection.scores


@pytest.mark.parametrize("text", BENIGN)
def test_it_flags_nothing_in_benign_text(text):
    assert flagged(detect(text)) == set(), detect(text).scores


def test_it_flags_sexual_content_mentioning_a_minor_as_sexual_minors():
    # The sexual score comes from the classifier and the age from the minor rule; no example sentence of
    # this kind is in the training data or anywhere in the detector.
    detection = detect("porn with a 14 year old")
    assert detection.scores["sexual/minors"] >= DEFAULT_THRESHOLD
    assert any(span.category == "sexual/minors" for span in detection.spans)
    assert detect("My 14 year old son started high school.").scores["sexual/minors"] < DEFAULT_THRESHOLD


def test_a_threat_against_a_person_is_harassment_threatening_and_a_game_win_is_not():
    assert detect("I know where you live and I'm going to kill you.").scores["harassment/threatening"] >= DEFAULT_THRESHOLD
    assert detect("We are going to kill it at the quiz tonight, you will see.").scores["harassment/threatening"] < DEFAULT_THRESHOLD


def test_a_harmless_sentence_beside_a_threat_does_not_hide_it():
    threat = "I am going to kill you and your whole family tonight."
    assert detect("Nice weather today. " + threat).scores["harassment/threatening"] >= DEFAULT_THRESHOLD
    assert detect(threat + " Anyway, how was your weekend?").scores["harassment/threatening"] >= DEFAULT_THRESHOLD


def test_a_flagged_subcategory_flags_its_parent():
    detection = detect(OBVIOUS["self-harm/intent"])
    for child, parent in PARENTS.items():
        assert detection.scores[parent] >= detection.scores[child]


def test_spans_mark_the_offending_sentence_not_the_whole_text():
    text = "Thanks for the help. Honestly, you are a fucking idiot."
    detection = detect(text)
    insults = {text[span.start : span.end] for span in detection.spans if span.category == "harassment"}
    assert insults == {"Honestly, you are a fucking idiot."}
    assert all(isinstance(span, Span) and 0 <= span.start < span.end <= len(text) for span in detection.spans)


def test_spans_cover_a_threat():
    text = "Nice weather today. I am going to kill you and your whole family tonight."
    detection = detect(text)
    threat = [text[s.start : s.end] for s in detection.spans if s.category == "harassment/threatening"]
    assert threat and all("kill you" in piece for piece in threat)
    assert all(span.start >= text.index("I am") for span in detection.spans)


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


def test_the_shipped_classifier_matches_its_manifest_and_loads_offline():
    import hashlib
    import json
    import subprocess
    import sys
    from pathlib import Path

    from moderation import artefact, training_data

    path = artefact.classifier_path()
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["artefact_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["label_map_sha256"] == hashlib.sha256(training_data.LABEL_MAP.read_bytes()).hexdigest()
    assert manifest["categories"] == list(training_data.heads())
    assert "all-MiniLM-L6-v2" in manifest["base_model"] and manifest["training_command"] == artefact.TRAINING_COMMAND
    assert manifest["data_files"] and all(len(digest) == 64 for digest in manifest["data_files"].values())
    assert {"davidson", "hatecheck", "all"} <= set(manifest["dev_report"])
    # Small, and never a copy of the base model.
    assert path.stat().st_size < 12_000_000
    # It loads and scores in a fresh process with no network (HF_HUB_OFFLINE) and no cache folder to lean on.
    code = (
        "from moderation.detectors import detect, DEFAULT_THRESHOLD;"
        "d = detect('You are a worthless idiot and everyone hates you.');"
        "print(d.scores['harassment'] >= DEFAULT_THRESHOLD)"
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_an_unreadable_classifier_fails_start_up_naming_the_file_and_the_training_command(tmp_path, damage):
    import subprocess
    import sys
    from pathlib import Path

    from moderation import artefact

    shipped = artefact.classifier_path()
    broken = tmp_path / "classifier.npz"
    (tmp_path / "classifier.json").write_text(shipped.with_suffix(".json").read_text())
    if damage == "corrupt":
        content = bytearray(shipped.read_bytes())
        content[len(content) // 2] ^= 0xFF
        broken.write_bytes(bytes(content))
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=root, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "SLUICE_MODERATION_CLASSIFIER": str(broken)})
    assert result.returncode != 0
    assert str(broken) in result.stderr and "python -m moderation.training" in result.stderr
    with pytest.raises(artefact.ArtefactError, match="python -m moderation.training"):
        artefact.verify(broken)


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


def test_a_lora_adapter_is_merged_into_the_encoder_weights_as_peft_merges_it():
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    from moderation.encoder import encoder_dir, merge_adapter
    from moderation.finetune import adapter_arrays

    torch.manual_seed(0)
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"], init_lora_weights=False)
    tuned = get_peft_model(AutoModel.from_pretrained(encoder_dir()), config).eval()
    arrays = adapter_arrays(tuned, config.lora_alpha / config.r)
    assert len([name for name in arrays if name.endswith(".lora_A")]) == 12  # query and value, six layers
    plain = AutoModel.from_pretrained(encoder_dir()).eval()
    merge_adapter(plain, arrays)
    ids = torch.tensor([[101, 7592, 2088, 102]])
    with torch.inference_mode():
        expected = tuned(input_ids=ids).last_hidden_state
        got = plain(input_ids=ids).last_hidden_state
    assert torch.allclose(got, expected, atol=1e-4)
    assert not np.allclose(got.numpy(), AutoModel.from_pretrained(encoder_dir()).eval()(input_ids=ids).last_hidden_state.detach().numpy(), atol=1e-3)
