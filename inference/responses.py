"""OpenAI response objects for chat and text completions, whole and streamed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from inference.logprob_entries import LogprobEntry, completion_logprobs
from inference.services import ENDPOINT_CHAT, Generated, RunningGeneration


def _chat_logprobs(entries: list[LogprobEntry] | None) -> dict | None:
    return None if entries is None else {"content": [entry.as_chat() for entry in entries], "refusal": None}


def _ids(endpoint: str) -> tuple[str, int]:
    prefix = "chatcmpl" if endpoint == ENDPOINT_CHAT else "cmpl"
    return f"{prefix}-{uuid.uuid4().hex}", int(time.time())


def chat_completion_body(result: Generated, *, model: str) -> dict:
    completion_id, created = _ids(ENDPOINT_CHAT)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "logprobs": _chat_logprobs(result.logprobs),
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": result.usage,
    }


def text_completion_body(result: Generated, *, model: str) -> dict:
    completion_id, created = _ids("completions")
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": result.text,
                     "logprobs": None if result.logprobs is None else completion_logprobs(result.logprobs),
                     "finish_reason": result.finish_reason}],
        "usage": result.usage,
    }


def chat_completion_chunks(running: RunningGeneration) -> Iterator[dict]:
    completion_id, created = _ids(ENDPOINT_CHAT)
    include_usage = running.job.include_usage
    base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": running.job.model}
    if include_usage:
        base["usage"] = None

    def chunk(delta: dict, finish_reason: str | None = None, logprobs: list | None = None) -> dict:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": _chat_logprobs(logprobs),
                                     "finish_reason": finish_reason}]}

    yield chunk({"role": "assistant", "content": ""})
    for piece in running.pieces():
        yield chunk({"content": piece}, logprobs=running.logprobs_released())
    yield chunk({}, running.result.finish_reason, logprobs=running.logprobs_released(final=True) or None)
    if include_usage:
        yield {**base, "choices": [], "usage": running.result.usage}


def text_completion_chunks(running: RunningGeneration) -> Iterator[dict]:
    completion_id, created = _ids("completions")
    include_usage = running.job.include_usage
    base = {"id": completion_id, "object": "text_completion", "created": created, "model": running.job.model}
    if include_usage:
        base["usage"] = None

    def chunk(text: str, finish_reason: str | None = None, logprobs: list | None = None) -> dict:
        body = None if logprobs is None else completion_logprobs(logprobs)
        return {**base, "choices": [{"index": 0, "text": text, "logprobs": body, "finish_reason": finish_reason}]}

    for piece in running.pieces():
        yield chunk(piece, logprobs=running.logprobs_released())
    yield chunk("", running.result.finish_reason, logprobs=running.logprobs_released(final=True) or None)
    if include_usage:
        yield {**base, "choices": [], "usage": running.result.usage}
