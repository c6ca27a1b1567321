"""Sentiment and QA on any served generator (local, remote, an alias), by prompting it through the engine interface.

The reply is parsed and held to the task endpoints' contract, never passed through: sentiment is one of the
labels with scores summing to 1 (the label the model named gets 1; a reply naming neither label or both gets
0.5 each, since neither the engine interface nor the remote upstream protocol used here returns
log-probabilities); a QA answer is a span of the context with its offsets, and anything the model says that
is not found in the context (an invention, "unknown") is ``answer: null``. Prompts live in
``prompted_tasks.json``. Metered like generation: the prompts' tokens plus the generated ones; inputs are
moderated before anything runs and QA answers before they are released.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.conf import settings

from accounts.models import ApiKey
from accounts.services import AccessRefused, key_check_access, request_admit, request_settle
from inference.engines.base import Engine, EngineBusy, EngineError
from inference.fair_queue import AccountLimitExceeded, Share
from inference.sampling import SamplingParams
from inference.services import _engine_for, account_limited_error, moderation_scorer, share_for
from moderation.models import BLOCK
from moderation.policies import policy_for
from moderation.services import ModerationContext, ModerationLogFailed, moderation_check
from platform.errors import ApiError

PROMPTS = json.loads(Path(__file__).with_name("prompted_tasks.json").read_text())
_PARALLEL = 8  # items of one request generated at once (a local engine batches them)


def _messages(task: str, **fields) -> list[dict]:
    prompt = PROMPTS[task]
    return [{"role": "system", "content": prompt["system"]}, {"role": "user", "content": prompt["user"].format(**fields)}]


def _generate(engine: Engine, messages: list[dict], max_tokens: int, deadline: float,
              share: Share | None = None) -> tuple[str, int, int]:
    """Greedy reply text, prompt tokens and completion tokens of one prompt."""
    prompt_ids = engine.encode_chat(messages)
    stream = engine.stream(prompt_ids, SamplingParams(max_tokens=max_tokens, temperature=0.0), deadline=deadline,
                           messages=messages, share=share)
    text = "".join(stream)
    if stream.finish_reason == "error":
        raise EngineError("The model failed while answering.", status_code=getattr(stream, "error_status", None) or 502)
    return text, getattr(stream, "prompt_tokens", None) or len(prompt_ids), stream.completion_tokens


def sentiment_from_reply(reply: str) -> dict:
    labels = PROMPTS["sentiment"]["labels"]
    named = [label for label in labels if re.search(rf"\b{label}\b", reply.lower())]
    if len(named) == 1:
        return {"label": named[0], "scores": {label: 1.0 if label == named[0] else 0.0 for label in labels}}
    return {"label": labels[0], "scores": {label: 1.0 / len(labels) for label in labels}}


def span_from_reply(reply: str, context: str) -> tuple[int, int] | None:
    """Where the reply (its first line, outer quotes and punctuation taken off) occurs in the context, exactly or
    else ignoring case; None when it does not."""
    candidate = reply.strip().splitlines()[0].strip() if reply.strip() else ""
    for text in (candidate.strip(" \"'`*.,;:!"), candidate):
        if not text or text.lower() == PROMPTS["qa"]["no_answer"]:
            return None
        at = context.find(text)
        if at < 0:
            at = context.lower().find(text.lower())
        if at >= 0:
            return at, at + len(text)
    return None


def _check_access(key: ApiKey, model: str, endpoint: str) -> None:
    try:
        key_check_access(key=key, model=model, endpoint=endpoint)
    except AccessRefused as refused:
        raise ApiError(str(refused), status_code=403, type="permission_error", code="model_not_allowed",
                       param="model") from None


def _moderate(texts: list[str], context: ModerationContext, policy, engine: Engine) -> list[str]:
    try:
        verdicts = moderation_check(texts=texts, direction="input", context=context, policy=policy,
                                    detect=moderation_scorer(engine))
    except ModerationLogFailed:
        raise ApiError("The request could not be checked; retry shortly.", status_code=503, type="server_error",
                       code="moderation_unavailable", headers={"Retry-After": "1"}) from None
    blocked = sorted({c for v in verdicts if v.blocked for c in v.categories})
    if blocked:
        raise ApiError(f"The input was blocked by the content policy ({', '.join(blocked)}).", param="input",
                       code="content_filter")
    return [v.text for v in verdicts]


def _run(*, key: ApiKey, request_id: str, endpoint: str, model: str, engine: Engine, prompts: list[list[dict]],
         max_tokens: int) -> tuple[list[str], dict, dict]:
    """Admit the prompts (their tokens + max_tokens each), generate every reply, settle to what was used."""
    prompt_tokens = [len(engine.encode_chat(messages)) for messages in prompts]
    limit = min(settings.SLUICE_MAX_PROMPT_TOKENS, engine.context_window - max_tokens)
    for index, tokens in enumerate(prompt_tokens):
        if tokens > limit:
            raise ApiError(f"input[{index}] has {tokens} tokens with its prompt, above the limit of {limit} for "
                           "this task.", param=f"input[{index}]", code="context_length_exceeded")
    admission = request_admit(key=key, request_id=request_id, endpoint=endpoint, model=model,
                              prompt_tokens=sum(prompt_tokens), max_tokens=max_tokens * len(prompts))
    deadline = time.monotonic() + settings.SLUICE_REQUEST_TIMEOUT_S
    share = share_for(key=key)
    try:
        with ThreadPoolExecutor(min(_PARALLEL, len(prompts))) as pool:
            results = list(pool.map(lambda messages: _generate(engine, messages, max_tokens, deadline, share), prompts))
    except AccountLimitExceeded as limited:
        request_settle(admission=admission, prompt_tokens=0, completion_tokens=0, status_code=429,
                       error_code="rate_limit_exceeded")
        raise account_limited_error(limited, admission.headers) from None
    except (EngineError, EngineBusy) as failed:
        status = getattr(failed, "status_code", 503)
        code = getattr(failed, "code", "engine_overloaded")
        request_settle(admission=admission, prompt_tokens=0, completion_tokens=0, status_code=status, error_code=code)
        raise ApiError(getattr(failed, "message", "The engine is currently overloaded; retry shortly."),
                       status_code=status, type="server_error", code=code, headers=admission.headers) from None
    except Exception:
        request_settle(admission=admission, prompt_tokens=0, completion_tokens=0, status_code=500,
                       error_code="task_error")
        raise
    usage = {"prompt_tokens": sum(r[1] for r in results), "completion_tokens": sum(r[2] for r in results)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    request_settle(admission=admission, prompt_tokens=usage["prompt_tokens"],
                   completion_tokens=usage["completion_tokens"], status_code=200)
    return [r[0] for r in results], usage, admission.headers


def prompted_sentiment_run(*, key: ApiKey, request_id: str, texts: list[str], model: str,
                           endpoint: str) -> tuple[dict, dict[str, str]]:
    engine = _engine_for(model)
    _check_access(key, model, endpoint)
    context = ModerationContext(account=key.account, api_key=key, request_id=request_id, endpoint=endpoint)
    texts = _moderate(texts, context, policy_for(key.account), engine)
    replies, usage, headers = _run(key=key, request_id=request_id, endpoint=endpoint, model=model, engine=engine,
                                   prompts=[_messages("sentiment", text=text) for text in texts],
                                   max_tokens=PROMPTS["sentiment"]["max_tokens"])
    data = [{"index": i, **sentiment_from_reply(reply)} for i, reply in enumerate(replies)]
    return {"object": "list", "model": model, "data": data, "usage": usage}, headers


def prompted_qa_run(*, key: ApiKey, request_id: str, pairs: list[tuple[str, str]], model: str,
                    endpoint: str) -> tuple[dict, dict[str, str]]:
    engine = _engine_for(model)
    _check_access(key, model, endpoint)
    context = ModerationContext(account=key.account, api_key=key, request_id=request_id, endpoint=endpoint)
    policy = policy_for(key.account)
    flat = _moderate([text for pair in pairs for text in pair], context, policy, engine)
    pairs = list(zip(flat[0::2], flat[1::2]))
    replies, usage, headers = _run(key=key, request_id=request_id, endpoint=endpoint, model=model, engine=engine,
                                   prompts=[_messages("qa", question=q, context=c) for q, c in pairs],
                                   max_tokens=PROMPTS["qa"]["max_tokens"])
    data = []
    for index, ((_, context_text), reply) in enumerate(zip(pairs, replies)):
        span = span_from_reply(reply, context_text)
        item = {"index": index, "answer": None, "score": 0.0, "start": None, "end": None}
        if span is not None:
            answer = context_text[span[0]:span[1]]
            try:  # answers are output: moderated before release
                verdict = moderation_check(texts=[answer], direction="output", context=context, policy=policy,
                                           detect=moderation_scorer(engine))[0]
            except ModerationLogFailed:
                verdict = None
            if verdict is None or verdict.action == BLOCK:
                item["content_filter"] = True
            else:
                item.update(answer=verdict.text, score=1.0, start=span[0], end=span[1])
        data.append(item)
    return {"object": "list", "model": model, "data": data, "usage": usage}, headers
