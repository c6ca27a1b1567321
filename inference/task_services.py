"""Sentiment analysis and question answering: validated, moderated, admitted, metered like generation.

Both run on the process-wide generator (``Engine.classify_sentiment`` / ``answer_questions``, batched across
concurrent requests), or on a dedicated model folder when one is configured (``inference.task_models``).
Usage is charged in the input tokens the model read.
"""

from __future__ import annotations

from django.conf import settings

from accounts.models import ApiKey
from accounts.services import AccessRefused, key_check_access, request_admit, request_settle
from inference.engine import Engine, get_engine
from inference.prompted_tasks import prompted_qa_run, prompted_sentiment_run
from inference.services import moderation_scorer
from inference.task_models import dedicated_pipeline, pipeline_qa, pipeline_sentiment
from moderation.models import BLOCK
from moderation.policies import policy_for
from moderation.services import ModerationContext, ModerationLogFailed, moderation_check
from platform.errors import ApiError

ENDPOINT_SENTIMENT = "sentiment"
ENDPOINT_QA = "qa"


def _check_access(key: ApiKey, engine: Engine, endpoint: str) -> None:
    try:
        key_check_access(key=key, model=engine.model_id, endpoint=endpoint)
    except AccessRefused as refused:
        raise ApiError(str(refused), status_code=403, type="permission_error", code="model_not_allowed") from None


def _check_length(engine: Engine, text: str, *, param: str) -> int:
    tokens = engine.count_tokens(text)
    limit = min(settings.SLUICE_MAX_PROMPT_TOKENS, engine.context_window // 2)
    if tokens > limit:
        raise ApiError(f"{param} has {tokens} tokens, above the limit of {limit} for this task.", param=param,
                       code="context_length_exceeded")
    return tokens


def _moderate_inputs(texts: list[str], context: ModerationContext, policy, engine: Engine, *,
                     param: str) -> list[str]:
    try:
        verdicts = moderation_check(texts=texts, direction="input", context=context, policy=policy,
                                    detect=moderation_scorer(engine))
    except ModerationLogFailed:
        raise ApiError("The request could not be checked; retry shortly.", status_code=503, type="server_error",
                       code="moderation_unavailable", headers={"Retry-After": "1"}) from None
    blocked = [v for v in verdicts if v.blocked]
    if blocked:
        categories = sorted({c for v in blocked for c in v.categories})
        raise ApiError(f"The input was blocked by the content policy ({', '.join(categories)}).", param=param,
                       code="content_filter")
    return [v.text for v in verdicts]


def _run_admitted(*, key, request_id, endpoint, engine, tokens, work):
    admission = request_admit(key=key, request_id=request_id, endpoint=endpoint, model=engine.model_id,
                              prompt_tokens=tokens, max_tokens=0)
    try:
        results = work()
    except Exception:
        request_settle(admission=admission, prompt_tokens=0, completion_tokens=0, status_code=500,
                       error_code="task_error")
        raise
    return admission, results


def _body(engine: Engine, data: list[dict], tokens: int) -> dict:
    return {"object": "list", "model": engine.model_id, "data": data,
            "usage": {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens}}


def sentiment_run(*, key: ApiKey, request_id: str, texts: list[str], model: str | None = None
                  ) -> tuple[dict, dict[str, str]]:
    if model is not None:  # a named generator: the task by prompting it (an unknown name is a 400 there)
        return prompted_sentiment_run(key=key, request_id=request_id, texts=texts, model=model,
                                      endpoint=ENDPOINT_SENTIMENT)
    engine = get_engine()  # the local model: tasks score with its forward passes
    _check_access(key, engine, ENDPOINT_SENTIMENT)
    tokens = sum(_check_length(engine, text, param=f"input[{i}]") for i, text in enumerate(texts))
    context = ModerationContext(account=key.account, api_key=key, request_id=request_id, endpoint=ENDPOINT_SENTIMENT)
    texts = _moderate_inputs(texts, context, policy_for(key.account), engine, param="input")
    pipe = dedicated_pipeline("sentiment")
    work = (lambda: pipeline_sentiment(pipe, texts)) if pipe else (lambda: engine.classify_sentiment(texts))
    admission, results = _run_admitted(key=key, request_id=request_id, endpoint=ENDPOINT_SENTIMENT, engine=engine,
                                       tokens=tokens, work=work)
    request_settle(admission=admission, prompt_tokens=tokens, completion_tokens=0, status_code=200)
    data = [{"index": i, "label": r["label"], "scores": r["scores"]} for i, r in enumerate(results)]
    return _body(engine, data, tokens), admission.headers


def qa_run(*, key: ApiKey, request_id: str, pairs: list[tuple[str, str]], model: str | None = None
           ) -> tuple[dict, dict[str, str]]:
    if model is not None:  # a named generator: the task by prompting it (an unknown name is a 400 there)
        return prompted_qa_run(key=key, request_id=request_id, pairs=pairs, model=model, endpoint=ENDPOINT_QA)
    engine = get_engine()  # the local model: tasks score with its forward passes
    _check_access(key, engine, ENDPOINT_QA)
    tokens = sum(_check_length(engine, question + "\n" + context_text, param=f"input[{i}].context")
                 for i, (question, context_text) in enumerate(pairs))
    context = ModerationContext(account=key.account, api_key=key, request_id=request_id, endpoint=ENDPOINT_QA)
    policy = policy_for(key.account)
    flat = _moderate_inputs([text for pair in pairs for text in pair], context, policy, engine, param="input")
    pairs = list(zip(flat[0::2], flat[1::2]))
    pipe = dedicated_pipeline("qa")
    work = (lambda: pipeline_qa(pipe, pairs)) if pipe else (lambda: engine.answer_questions(pairs))
    admission, results = _run_admitted(key=key, request_id=request_id, endpoint=ENDPOINT_QA, engine=engine,
                                       tokens=tokens, work=work)
    data = []
    for index, result in enumerate(results):
        item = {"index": index, "answer": result["answer"], "score": round(result["score"], 6),
                "start": result["start"], "end": result["end"]}
        if result["answer"] is not None:  # answers are output: moderated before release
            try:
                verdict = moderation_check(texts=[result["answer"]], direction="output", context=context,
                                           policy=policy, detect=moderation_scorer(engine))[0]
            except ModerationLogFailed:
                verdict = None
            if verdict is None or verdict.action == BLOCK:
                item.update(answer=None, start=None, end=None, content_filter=True)
            elif verdict.text != result["answer"]:
                item["answer"] = verdict.text
        data.append(item)
    request_settle(admission=admission, prompt_tokens=tokens, completion_tokens=0, status_code=200)
    return _body(engine, data, tokens), admission.headers
