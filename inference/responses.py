"""OpenAI response objects for chat and text completions, whole and streamed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from inference.logprob_entries import LogprobEntry, completion_logprobs
from inference.services import ENDPOINT_CHAT, Generated, RunningGeneration
from inference.tool_calls import ToolCallParser, tool_calls_from_events


def _chat_logprobs(entries: list[LogprobEntry] | None) -> dict | None:
    return None if entries is None else {"content": [entry.as_chat() for entry in entries], "refusal": None}


def _ids(endpoint: str) -> tuple[str, int]:
    prefix = "chatcmpl" if endpoint == ENDPOINT_CHAT else "cmpl"
    return f"{prefix}-{uuid.uuid4().hex}", int(time.time())


def _chat_message(result: Generated) -> tuple[dict, str]:
    """The assistant's message and the finish reason: a reply read for tool calls holds them."""
    calls = result.upstream_tool_calls or []
    content = result.text
    if result.tools is not None and not calls:
        parser = ToolCallParser(result.tools)
        content, calls = tool_calls_from_events(parser.push(result.text) + parser.finish())
    if not calls:
        return {"role": "assistant", "content": result.text}, result.finish_reason
    message = {"role": "assistant", "content": content.strip() or None, "tool_calls": calls}
    return message, "tool_calls" if result.finish_reason == "stop" else result.finish_reason


def chat_completion_body(result: Generated, *, model: str) -> dict:
    completion_id, created = _ids(ENDPOINT_CHAT)
    message, finish_reason = _chat_message(result)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": _chat_logprobs(result.logprobs),
                "finish_reason": finish_reason,
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
    parser = ToolCallParser(running.job.tools) if running.job.tools is not None else None
    called = False
    for piece in running.pieces():
        if parser is None:
            yield chunk({"content": piece}, logprobs=running.logprobs_released())
            continue
        for delta in _tool_deltas(parser.push(piece)):
            called = called or "tool_calls" in delta
            yield chunk(delta)
    for delta in _tool_deltas(parser.finish() if parser is not None else []):
        called = called or "tool_calls" in delta
        yield chunk(delta)
    for index, call in enumerate(running.result.upstream_tool_calls or []):  # a remote model's, whole
        called = True
        yield chunk({"tool_calls": [{"index": index, **call}]})
    finish_reason = running.result.finish_reason
    if called and finish_reason == "stop":
        finish_reason = "tool_calls"
    yield chunk({}, finish_reason, logprobs=running.logprobs_released(final=True) or None)
    if include_usage:
        yield {**base, "choices": [], "usage": running.result.usage}


def _tool_deltas(events: list[tuple]) -> Iterator[dict]:
    """OpenAI's chunk deltas for a tool-call parse's events."""
    for event in events:
        if event[0] == "content":
            yield {"content": event[1]}
        elif event[0] == "call":
            yield {"tool_calls": [{"index": event[1], "id": event[2], "type": "function",
                                   "function": {"name": event[3], "arguments": ""}}]}
        else:
            yield {"tool_calls": [{"index": event[1], "function": {"arguments": event[2]}}]}


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
