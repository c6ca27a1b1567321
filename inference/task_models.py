"""The trained task models, loaded once per process: the sentiment classifier and the extractive QA reader.

Each is a LoRA adapter with its head (``inference/trained/<task>/``, or the folder in
``SLUICE_SENTIMENT_MODEL_PATH`` / ``SLUICE_QA_MODEL_PATH``) over the packaged all-MiniLM-L6-v2 encoder. At
load the files are checked against the folder's manifest, each adapter is merged into its own copy of the
encoder's six transformer blocks and their linear layers are quantized to int8 (torch's dynamic
quantization); the two copies share one word-embedding table, kept in float16. Requests are batched across
concurrent callers (``MicroBatcher``), on one torch thread beside the generator.
"""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path

import torch
from django.conf import settings

from inference.encoder import TRAINED_DIR, TaskModel, load_base, load_tokenizer, sha256
from inference.microbatch import MicroBatcher
from inference.tasks import qa as reader
from inference.tasks import sentiment
from moderation.model_loading import model_loading_lock

_SETTINGS = {"sentiment": "SLUICE_SENTIMENT_MODEL_PATH", "qa": "SLUICE_QA_MODEL_PATH"}
MODEL_IDS = {"sentiment": "minilm-l6-sst2", "qa": "minilm-l6-squad"}


class ArtefactError(RuntimeError):
    """A task model's files are missing, unreadable or not the ones its manifest names."""


def artefact_folder(task: str) -> Path:
    configured = getattr(settings, _SETTINGS[task])
    return Path(configured) if configured else TRAINED_DIR / task


def _refuse(task: str, path: Path, problem: str) -> ArtefactError:
    return ArtefactError(f"The {task} model file {path} {problem}; rebuild it with "
                         f"`python -m inference.training.{task}` (see README, Sentiment and question answering).")


def read_manifest(task: str, folder: Path) -> dict:
    """The folder's manifest, once every file it names is there with the sha256 it records."""
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _refuse(task, path, f"is missing or unreadable ({type(error).__name__}: {error})") from None
    for name, expected in files.items():
        try:
            found = sha256(folder / name)
        except OSError as error:
            raise _refuse(task, folder / name, f"is missing or unreadable ({error.strerror})") from None
        if found != expected:
            raise _refuse(task, folder / name, "does not match its manifest (sha256 differs)")
    return manifest


def _task_model(task: str, folder: Path, base, labels: int, *, pool: bool) -> torch.nn.Module:
    from peft import PeftModel

    # A copy of the transformer blocks, the embeddings shared with ``base`` (the adapters leave them alone).
    encoder = copy.deepcopy(base, memo={id(base.embeddings): base.embeddings})
    try:
        model = PeftModel.from_pretrained(TaskModel(encoder, labels, pool=pool), str(folder)).merge_and_unload()
    except Exception as error:  # a truncated or foreign safetensors file, a config for another shape
        raise _refuse(task, folder / "adapter_model.safetensors", f"could not be loaded ({type(error).__name__}: {error})") from None
    return quantize(model.eval(), SERVED_PRECISION[task])


# How each task's linear layers are served, chosen on the development splits (benchmarks/task_eval_offline.py
# --precisions; figures in README's Benchmarks): "int8" per tensor, "int8-per-channel" (a scale per output
# row) or "float32" (not quantized: 31 MB more per task than int8).
SERVED_PRECISION = {"sentiment": "int8-per-channel", "qa": "float32"}


def quantize(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if precision == "float32":
        return model
    spec = {torch.nn.Linear: per_channel_dynamic_qconfig} if precision == "int8-per-channel" else {torch.nn.Linear}
    return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)


def _copy_out_of_the_weights_file(module: torch.nn.Module) -> None:
    """Give ``module``'s tensors memory of their own. transformers loads the base model's tensors from a
    memory map of its model.safetensors, and the map stays (every page read counted in the worker's RSS,
    90 MB) while any tensor loaded from it lives: here the shared embeddings' positions, token types and
    norm. Measured: the task models added 184 MB RSS to a process, 99 MB once copied out."""
    for part in module.modules():
        for name, tensor in list(part._parameters.items()):
            if tensor is not None:
                tensor.data = tensor.data.clone()
        for name, tensor in list(part._buffers.items()):
            if tensor is not None:
                part._buffers[name] = tensor.clone()


def _release_freed_memory() -> None:
    """Hand the float32 weights freed after quantizing back to the system (glibc keeps them otherwise)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()  # peft's wrappers hold reference cycles: the merged float32 models go only with them
    if ctypes.util.find_library("c"):
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)


class TaskModels:
    def __init__(self) -> None:
        self.manifests = {task: read_manifest(task, artefact_folder(task)) for task in _SETTINGS}
        # One tokenizer per thread that encodes: the fast tokenizer keeps its padding and truncation settings in
        # shared state, so a token count (no padding) in a request thread, in the middle of the sentiment
        # thread's padded batch, made that batch ragged (25 of 872 requests failed with a 500 at C = 8).
        self.tokenizer = load_tokenizer()  # request threads: counts only, all with the same settings
        self._sentiment_tokenizer = load_tokenizer()
        self._qa_tokenizer = load_tokenizer()
        base = load_base()
        base.embeddings.word_embeddings.half()  # looked up, then summed with float32 positions: float32 again
        self.labels = self.manifests["sentiment"]["labels"]
        self._sentiment_model = _task_model("sentiment", artefact_folder("sentiment"), base, len(self.labels), pool=True)
        self._qa_model = _task_model("qa", artefact_folder("qa"), base, 2, pool=False)
        _copy_out_of_the_weights_file(base.embeddings)
        del base  # its float32 transformer blocks: only the quantized copies serve
        _release_freed_memory()
        qa_settings = self.manifests["qa"]["settings"]
        self.window, self.stride = qa_settings["window"], qa_settings["stride"]
        self.max_answer_tokens = qa_settings["max_answer_tokens"]
        self.null_threshold = float(self.manifests["qa"]["threshold"]["null_margin_above"])
        self._sentiment = MicroBatcher(self._run_sentiment, max_items=64, name="sentiment-model", threads=1)
        self._qa = MicroBatcher(self._run_qa, max_items=16, name="qa-model", threads=1)
        self.classify(["warm up"])
        self.answer([("warm up?", "warm up")])

    # Token counts, for limits and metering: what the encoder reads (QA: question and context once each).
    def count_sentiment_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def count_qa_tokens(self, question: str, context: str) -> tuple[int, int]:
        """(question tokens, question and context tokens)."""
        question_tokens = len(self.tokenizer(question, add_special_tokens=False)["input_ids"])
        return question_tokens, len(self.tokenizer(question, context)["input_ids"])

    def classify(self, texts: list[str]) -> list[dict]:
        return self._sentiment.submit(texts)

    def answer(self, pairs: list[tuple[str, str]]) -> list[dict]:
        return self._qa.submit(pairs)

    @torch.inference_mode()
    def _run_sentiment(self, texts: list[str]) -> list[dict]:
        found = []
        for first in range(0, len(texts), 32):
            logits = self._sentiment_model(**sentiment.batch(self._sentiment_tokenizer, texts[first : first + 32]))
            found.extend(sentiment.scores(logits, self.labels))
        return [{"label": max(s, key=s.get), "scores": s} for s in found]

    @torch.inference_mode()
    def _run_qa(self, pairs: list[tuple[str, str]]) -> list[dict]:
        windows = reader.windows(self._qa_tokenizer, pairs, length=self.window, stride=self.stride)
        logits = []
        for first in range(0, len(windows), 16):
            chunk = windows[first : first + 16]
            out = self._qa_model(**reader.batch(chunk)).float()
            logits.extend(out[row, : len(w.ids)] for row, w in enumerate(chunk))
        results = []
        for (_, context), found in zip(pairs, reader.read(windows, logits, len(pairs), max_answer_tokens=self.max_answer_tokens)):
            # score: the probability-like margin of the answer over "no answer" (logistic of the margin)
            confidence = float(torch.sigmoid(torch.tensor(-found.null_margin)))
            if found.start is None or found.null_margin > self.null_threshold:
                results.append({"answer": None, "score": 1 - confidence, "start": None, "end": None})
            else:
                results.append({"answer": context[found.start : found.end], "score": confidence,
                                "start": found.start, "end": found.end})
        return results


_models: TaskModels | None = None
_error: str | None = None
_lock = threading.Lock()


def task_models() -> TaskModels:
    """The process's task models, loading them on first use (an ``ArtefactError`` names the bad file)."""
    global _models, _error
    if _models is None:
        with _lock:
            if _models is None:
                try:
                    with model_loading_lock:  # never beside another model's from_pretrained
                        _models = TaskModels()
                    _error = None
                except ArtefactError as error:
                    _error = str(error)
                    raise
    return _models


def task_models_status() -> str:
    """"ready", "loading", "not loaded" or "failed: <why>" (for /readyz)."""
    if _models is not None:
        return "ready"
    if _lock.locked():
        return "loading"
    return f"failed: {_error}" if _error else "not loaded"


def task_models_load_in_background() -> threading.Thread:
    def load():
        import logging

        try:
            task_models()
        except ArtefactError:
            logging.getLogger(__name__).exception("The task models failed to load")

    thread = threading.Thread(target=load, name="task-models-warm-up", daemon=True)
    thread.start()
    return thread


def reset_task_models() -> None:
    """Forget the loaded models (tests that swap an artefact folder)."""
    global _models, _error
    with _lock:
        _models, _error = None, None
