"""The shipped task models: small, matching their manifests, loading offline; a damaged one stops start-up
with a message that names the file and the command that rebuilds it."""

import json
import os
import shutil

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from inference.encoder import BASE_MODEL_ID, TRAINED_DIR, sha256
from inference.task_models import ArtefactError, TaskModels, read_manifest

TASKS = ["sentiment", "qa"]


@pytest.mark.parametrize("task", TASKS)
def test_each_shipped_artefact_matches_its_manifest(task):
    folder = TRAINED_DIR / task
    manifest = read_manifest(task, folder)  # raises on a missing file or a differing sha256
    assert set(manifest["files"]) == {"adapter_model.safetensors", "adapter_config.json"}
    assert {p.name for p in folder.iterdir()} == set(manifest["files"]) | {"manifest.json"}
    assert manifest["base_model"] == BASE_MODEL_ID
    assert manifest["command"] == f"python -m inference.training.{task}"
    for entry in manifest["data"]:
        assert len(entry["sha256"]) == 64 and entry["bytes"] > 0
    assert manifest["epochs"] or manifest["checkpoints"]  # its dev scores
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == BASE_MODEL_ID


def test_the_shipped_artefacts_are_small_and_no_copy_of_the_base_model():
    files = [p for task in TASKS for p in (TRAINED_DIR / task).iterdir()]
    assert sum(p.stat().st_size for p in files) <= 18 * 2**20
    assert max(p.stat().st_size for p in files) < 25 * 2**20
    from safetensors import safe_open

    for task in TASKS:
        with safe_open(str(TRAINED_DIR / task / "adapter_model.safetensors"), "pt") as weights:
            names = list(weights.keys())
        assert all("lora_" in name or ".head." in name for name in names), names  # adapters and the head only


def test_the_shipped_artefacts_load_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from inference.task_models import task_models

    models = task_models()
    [result] = models.classify(["fine"])
    assert abs(sum(result["scores"].values()) - 1) < 1e-6


def test_the_loaded_task_models_hold_no_tensor_in_a_memory_map_of_the_base_weights_file():
    # Such a tensor keeps the whole map, 90 MB of the worker's RSS once read, for the life of the process.
    from inference.encoder import encoder_dir
    from inference.task_models import task_models

    models = task_models()
    weights_file = os.path.realpath(encoder_dir() / "model.safetensors")
    with open("/proc/self/maps") as maps:
        mapped = [tuple(int(end, 16) for end in line.split()[0].split("-")) for line in maps if weights_file in line]
    tensors = [t for model in (models._sentiment_model, models._qa_model)
               for t in list(model.parameters()) + list(model.buffers())]
    assert tensors
    assert not [t for t in tensors for low, high in mapped if low <= t.untyped_storage().data_ptr() < high]


@pytest.fixture
def damaged_qa(tmp_path, settings):
    folder = tmp_path / "qa"
    shutil.copytree(TRAINED_DIR / "qa", folder)
    settings.SLUICE_QA_MODEL_PATH = str(folder)
    return folder


def test_a_corrupt_artefact_fails_the_start_up_check_naming_the_file_and_the_command(damaged_qa):
    weights = damaged_qa / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(SystemCheckError) as raised:
        call_command("check")  # what `make serve`'s migrate runs before gunicorn starts
    message = str(raised.value)
    assert str(weights) in message and "python -m inference.training.qa" in message and "manifest" in message
    with pytest.raises(ArtefactError, match="python -m inference.training.qa"):
        TaskModels()


def test_a_missing_artefact_file_fails_with_a_clear_message(damaged_qa):
    (damaged_qa / "adapter_model.safetensors").unlink()
    with pytest.raises(ArtefactError, match=r"adapter_model\.safetensors is missing or unreadable.*inference\.training\.qa"):
        TaskModels()


def test_an_unreadable_artefact_that_matches_its_manifest_fails_to_load_with_a_clear_message(damaged_qa):
    weights = damaged_qa / "adapter_model.safetensors"
    weights.write_bytes(b"not a safetensors file")
    manifest = json.loads((damaged_qa / "manifest.json").read_text())
    manifest["files"]["adapter_model.safetensors"] = sha256(weights)
    (damaged_qa / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtefactError, match=r"adapter_model\.safetensors could not be loaded.*inference\.training\.qa"):
        TaskModels()


def test_readiness_reports_a_task_model_that_failed_to_load(anonymous, db, damaged_qa, monkeypatch):
    import inference.task_models as task_models

    (damaged_qa / "manifest.json").write_text("{")
    monkeypatch.setattr(task_models, "_models", None)
    monkeypatch.setattr(task_models, "_error", None)
    with pytest.raises(ArtefactError):
        task_models.task_models()
    response = anonymous.get("/readyz")
    assert response.status_code == 503
    assert response.json()["tasks"].startswith("failed: The qa model file") and "manifest.json" in response.json()["tasks"]


def test_counting_tokens_in_request_threads_never_unpads_a_batch_being_classified():
    # The fast tokenizer keeps its padding and truncation settings in shared state: a token count (no padding)
    # in a request thread, in the middle of the model thread's padded batch, made that batch ragged (a 500).
    import threading

    from inference.task_models import task_models

    models = task_models()
    texts = ["fine", "a long and winding and rather tedious film " * 3, "not bad at all, really", "no"] * 8
    stop = threading.Event()

    def count():
        while not stop.is_set():
            models.count_sentiment_tokens("a text of a few words to count")
            models.count_qa_tokens("who?", "someone, somewhere")

    counters = [threading.Thread(target=count) for _ in range(3)]
    for thread in counters:
        thread.start()
    try:
        for _ in range(40):
            models.classify(texts)
            models.answer([("Where is it?", "It is in Paris, " * 20), ("Who?", "Ann.")])
    finally:
        stop.set()
        for thread in counters:
            thread.join()
