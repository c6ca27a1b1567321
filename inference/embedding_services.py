"""``/v1/embeddings``: validated, moderated, admitted and metered like the task endpoints.

Usage is charged in the word pieces the encoder read ([CLS] and [SEP] included, as for sentiment). A text
over the encoder's window, or a request over ``SLUICE_EMBEDDING_MAX_TOKENS`` in all, is a 400 that charges
nothing. Inputs are moderated first; with a local generator the checks run between its steps, a few texts
at a time, so a long list never holds the generator up for long.
"""

from __future__ import annotations

import base64

import numpy as np
from django.conf import settings

from accounts.models import ApiKey
from accounts.services import AccessRefused, key_check_access, request_admit, request_settle
from inference.embedding_model import EMBEDDING_MODEL_ID, EMBEDDING_MODELS, MAX_TEXT_TOKENS, embedding_model, text_token_ids
from inference.engines.factory import get_engine
from inference.observation import observation_current
from inference.services import moderation_scorer
from moderation.policies import policy_for
from moderation.services import ModerationContext, ModerationLogFailed, moderation_check, moderation_scores
from platform.errors import ApiError

ENDPOINT_EMBEDDINGS = "embeddings"
# Texts judged per turn between two of the generator's steps.
MODERATION_TEXTS_PER_TURN = 16


def _check_model(key: ApiKey, model: str | None) -> str:
    model = model or EMBEDDING_MODEL_ID
    if model not in EMBEDDING_MODELS:
        raise ApiError(f"The model '{model}' is not an embedding model served here; embedding models: "
                       f"{', '.join(EMBEDDING_MODELS)}.", param="model", code="model_not_found")
    try:
        key_check_access(key=key, model=model, endpoint=ENDPOINT_EMBEDDINGS)
    except AccessRefused as refused:
        raise ApiError(str(refused), status_code=403, type="permission_error", code="model_not_allowed",
                       param="model") from None
    return model


def _token_ids(texts: list[str]) -> list[list[int]]:
    pieces = []
    for index, text in enumerate(texts):
        ids = text_token_ids(text)
        if len(ids) > MAX_TEXT_TOKENS:
            raise ApiError(f"input[{index}] has {len(ids) + 2} tokens, above this model's window of "
                           f"{MAX_TEXT_TOKENS + 2} ([CLS] and [SEP] included); split the text.", param=f"input[{index}]",
                           code="context_length_exceeded")
        pieces.append(ids)
    total = sum(len(ids) + 2 for ids in pieces)
    if total > settings.SLUICE_EMBEDDING_MAX_TOKENS:
        raise ApiError(f"The request has {total} tokens in all, above this server's limit of "
                       f"{settings.SLUICE_EMBEDDING_MAX_TOKENS} per request; send fewer texts per request.",
                       param="input", code="context_length_exceeded")
    return pieces


def _detect():
    """Moderation's scoring, between the local generator's steps (where one is served), in short turns."""
    scorer = moderation_scorer(get_engine()) if settings.SLUICE_LOCAL_MODEL else moderation_scores

    def detect(texts: list[str]):
        found = []
        for first in range(0, len(texts), MODERATION_TEXTS_PER_TURN):
            found.extend(scorer(texts[first : first + MODERATION_TEXTS_PER_TURN]))
        return found

    return detect


def _moderate_inputs(texts: list[str], *, key: ApiKey, request_id: str) -> list[str]:
    context = ModerationContext(account=key.account, api_key=key, request_id=request_id, endpoint=ENDPOINT_EMBEDDINGS)
    try:
        verdicts = moderation_check(texts=texts, direction="input", context=context, policy=policy_for(key.account),
                                    detect=_detect())
    except ModerationLogFailed:
        raise ApiError("The request could not be checked; retry shortly.", status_code=503, type="server_error",
                       code="moderation_unavailable", headers={"Retry-After": "1"}) from None
    blocked = [v for v in verdicts if v.blocked]
    if blocked:
        categories = sorted({c for v in blocked for c in v.categories})
        raise ApiError(f"The input was blocked by the content policy ({', '.join(categories)}).", param="input",
                       code="content_filter")
    return [v.text for v in verdicts]


def _encoded(vector: np.ndarray, encoding_format: str):
    if encoding_format == "base64":  # OpenAI's: the float32 values' little-endian bytes
        return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.astype(np.float32).tolist()


def embeddings_create(*, key: ApiKey, request_id: str, texts: list[str], model: str | None = None,
                      encoding_format: str = "float") -> tuple[dict, dict[str, str]]:
    """Embed ``texts`` for ``key``: refused (400/403/429, nothing charged) or admitted, run and settled."""
    model = _check_model(key, model)
    pieces = _token_ids(texts)
    tokens = sum(len(ids) + 2 for ids in pieces)
    observation_current().model = model
    released = _moderate_inputs(texts, key=key, request_id=request_id)
    # A redacted text is embedded as released (its masked characters read as unknown word pieces).
    pieces = [ids if text == original else text_token_ids(text)[:MAX_TEXT_TOKENS]
              for ids, text, original in zip(pieces, released, texts)]
    admission = request_admit(key=key, request_id=request_id, endpoint=ENDPOINT_EMBEDDINGS, model=model,
                              prompt_tokens=tokens, max_tokens=0)
    try:
        vectors = embedding_model().embed(pieces)
    except Exception:
        request_settle(admission=admission, prompt_tokens=0, completion_tokens=0, status_code=500,
                       error_code="embedding_error")
        raise
    request_settle(admission=admission, prompt_tokens=tokens, completion_tokens=0, status_code=200)
    observation_current().prompt_tokens = tokens
    data = [{"object": "embedding", "index": index, "embedding": _encoded(vector, encoding_format)}
            for index, vector in enumerate(vectors)]
    body = {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return body, admission.headers
