"""Optional dedicated models for the task endpoints, loaded once per process like the generator.

``SLUICE_SENTIMENT_MODEL_PATH`` (a sequence-classification model folder) and ``SLUICE_QA_MODEL_PATH`` (an
extractive question-answering model folder) replace the embedded generator for their task; transformers'
pipelines run them. Unset, the task runs on the process-wide generator (no second model in memory).
"""

from __future__ import annotations

import threading

from django.conf import settings

_pipelines: dict[str, object] = {}
_lock = threading.Lock()
_TASKS = {"sentiment": ("text-classification", "SLUICE_SENTIMENT_MODEL_PATH"),
          "qa": ("question-answering", "SLUICE_QA_MODEL_PATH")}


def dedicated_pipeline(task: str):
    """The pipeline configured for ``task``, or None when the task runs on the generator."""
    pipeline_task, setting = _TASKS[task]
    path = getattr(settings, setting)
    if not path:
        return None
    if task not in _pipelines:
        with _lock:
            if task not in _pipelines:
                from transformers import pipeline

                _pipelines[task] = pipeline(pipeline_task, model=path, device="cpu")
    return _pipelines[task]


def pipeline_sentiment(pipe, texts: list[str]) -> list[dict]:
    results = []
    for text, ranked in zip(texts, pipe(texts, top_k=None, truncation=True)):
        scores = {entry["label"].lower(): float(entry["score"]) for entry in ranked}
        total = sum(scores.values()) or 1.0
        scores = {label: score / total for label, score in scores.items()}
        tokens = len(pipe.tokenizer(text, truncation=True)["input_ids"])
        results.append({"label": max(scores, key=scores.get), "scores": scores, "tokens": tokens})
    return results


def pipeline_qa(pipe, pairs: list[tuple[str, str]]) -> list[dict]:
    results = []
    for question, context in pairs:
        found = pipe(question=question, context=context, handle_impossible_answer=True)
        tokens = len(pipe.tokenizer(question, context, truncation="only_second")["input_ids"])
        if not found["answer"]:
            results.append({"answer": None, "score": float(found["score"]), "start": None, "end": None,
                            "tokens": tokens})
        else:
            results.append({"answer": context[found["start"]:found["end"]], "score": float(found["score"]),
                            "start": found["start"], "end": found["end"], "tokens": tokens})
    return results
