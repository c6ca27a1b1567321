"""Sentiment analysis and question answering: validated, moderated, admitted, metered like generation.

Both run on the trained task models (``inference.task_models``: a classifier and an extractive reader over
the packaged sentence encoder, batched across concurrent requests). Usage is charged in the input tokens the
encoder read; moderation runs through the generator's engine, between its steps, as for generation.
"""

from __future__ import annotations

from django.conf import settings

from accounts.models import ApiKey
from accounts.services import AccessRefused, key_check_access, request_admit, request_settle
from inference.engines.base import Engine
from inference.engines.factory import get_engine
from inference.prompted_tasks import prompted_qa_run, prompted_sentiment_run
from inference.services import moderation_scorer
from inference.task_models import MODEL_IDS, task_models
from moderation.models import BLOCK
from moderation.policies import policy_for
from moderation.services import ModerationContext, ModerationLogFailed, moderation_check
from platform.errors import ApiError

ENDPOINT_SENTIMENT = "sentiment"
ENDPOINT_QA = "qa"


def _check_access(key: ApiKey, endpoint: str) -> None:
    try:
        key_check_access(key=key, model=MODEL_IDS[endpoint], endpoint=endpoint)
    except AccessRefused as refused:
        raise ApiError(str(refused), status_code=403, type="permission_error", code="model_not_allowed") from None


# Sentiment reads a text whole, in one pass of the encoder (512 positions); a QA context of any length up to
# SLUICE_MAX_PROMPT_TOKENS is read in windows, each of which must hold the question as well.
SENTIMENT_MAX_TOKENS = 512
QA_MAX_QUESTION_TOKENS = 64


def _too_long(param: str, tokens: int, limit: int) -> ApiError:
    return ApiError(f"{param} has {tokens} tokens, above the limit of {limit} for this task.", param=param,
                    code="context_length_exceeded")


def _check_length(tokens: int, limit: int, *, param: str) -> int:
    if tokens > limit:
        raise _too_long(param, tokens, limit)
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


def _run_admitted(*, key, request_id, endpoint, tokens, work):
    admission = request_admit(key=key, request_id=request_id, endpoint=endpoint, model=MODEL_IDS[endpoint],
                              prompt_tokens=tokens, max_tokens=0)
    try:
        results = work()
    except Exception:
        request_settle(admission=admission, prompt_tokens=0, completion_tokens=0, status_code=500,
                       error_code="task_error")
        raise
    return admission, results


def _body(endpoint: str, data: list[dict], tokens: int) -> dict:
    return {"object": "list", "model": MODEL_IDS[endpoint], "data": data,
            "usage": {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens}}


def sentiment_run(*, key: ApiKey, request_id: str, texts: list[str], model: str | None = None
                  ) -> tuple[dict, dict[str, str]]:
    if model is not None and model != MODEL_IDS[ENDPOINT_SENTIMENT]:
        # A named generator: the task by prompting it (an unknown name is a 400 there).
        return prompted_sentiment_run(key=key, request_id=request_id, texts=texts, model=model,
                                      endpoint=ENDPOINT_SENTIMENT)
    _check_access(key, ENDPOINT_SENTIMENT)
    models = task_models()
    limit = min(settings.SLUICE_MAX_PROMPT_TOKENS, SENTIMENT_MAX_TOKENS)
    tokens = sum(_check_length(models.count_sentiment_tokens(text), limit, param=f"input[{i}]")
                 for i, text in enumerate(texts))
    engine = get_engine()  # moderation runs between the generator's steps
    context = ModerationContext(account=key.account, api_key=key, request_id=request_id, endpoint=ENDPOINT_SENTIMENT)
    texts = _moderate_inputs(texts, context, policy_for(key.account), engine, param="input")
    admission, results = _run_admitted(key=key, request_id=request_id, endpoint=ENDPOINT_SENTIMENT, tokens=tokens,
                                       work=lambda: models.classify(texts))
    request_settle(admission=admission, prompt_tokens=tokens, completion_tokens=0, status_code=200)
    data = [{"index": i, "label": r["label"], "scores": r["scores"]} for i, r in enumerate(results)]
    return _body(ENDPOINT_SENTIMENT, data, tokens), admission.headers


def qa_run(*, key: ApiKey, request_id: str, pairs: list[tuple[str, str]], model: str | None = None
           ) -> tuple[dict, dict[str, str]]:
    if model is not None and model != MODEL_IDS[ENDPOINT_QA]:
        # A named generator: the task by prompting it (an unknown name is a 400 there).
        return prompted_qa_run(key=key, request_id=request_id, pairs=pairs, model=model, endpoint=ENDPOINT_QA)
    _check_access(key, ENDPOINT_QA)
    models = task_models()
    tokens = 0
    for i, (question, context_text) in enumerate(pairs):
        question_tokens, pair_tokens = models.count_qa_tokens(question, context_text)
        _check_length(question_tokens, QA_MAX_QUESTION_TOKENS, param=f"input[{i}].question")
        tokens += _check_length(pair_tokens, settings.SLUICE_MAX_PROMPT_TOKENS, param=f"input[{i}].context")
    engine = get_engine()  # moderation runs between the generator's steps
    context = ModerationContext(account=key.account, api_key=key, request_id=request_id, endpoint=ENDPOINT_QA)
    policy = policy_for(key.account)
    flat = _moderate_inputs([text for pair in pairs for text in pair], context, policy, engine, param="input")
    pairs = list(zip(flat[0::2], flat[1::2]))
    admission, results = _run_admitted(key=key, request_id=request_id, endpoint=ENDPOINT_QA, tokens=tokens,
                                       work=lambda: models.answer(pairs))
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
    return _body(ENDPOINT_QA, data, tokens), admission.headers
