"""One report per request: Prometheus metrics always, and a JSON log line with ``SLUICE_LOG_FORMAT=json``.

A streamed response is reported when its last byte has been sent (or the client went away), so its latency,
tokens and finish reason are the real ones. The line carries the request id, the account and the key's
database id (never the key), the model, tokens and timings.
"""

from __future__ import annotations

import json
import logging
import re
import time

from django.conf import settings

from inference import metrics
from inference.observation import Observation, observation_begin

logger = logging.getLogger("sluice.request")

_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def endpoint_label(request) -> str:
    """The URL pattern that answered (``v1/models/{pk}``), never the raw path: a bounded set of labels."""
    match = getattr(request, "resolver_match", None)
    if match is None or not match.route:
        return "unmatched"
    return _NAMED_GROUP.sub(r"{\1}", match.route).strip("^$")


def _error_of(response) -> dict:
    data = getattr(response, "data", None)
    if data is None and not response.streaming and response.get("Content-Type", "").startswith("application/json"):
        try:
            data = json.loads(response.content)
        except ValueError:
            data = None
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


def request_report(request, response, observation: Observation) -> None:
    endpoint, model, status = endpoint_label(request), observation.model, response.status_code
    elapsed = time.monotonic() - observation.started
    metrics.REQUESTS.labels(endpoint, model, str(status)).inc()
    metrics.REQUEST_SECONDS.labels(endpoint, model).observe(elapsed)
    if observation.ttft_seconds is not None:
        metrics.FIRST_TOKEN_SECONDS.labels(endpoint, model).observe(observation.ttft_seconds)
    if observation.prompt_tokens:
        metrics.TOKENS.labels(endpoint, model, "prompt").inc(observation.prompt_tokens)
    if observation.completion_tokens:
        metrics.TOKENS.labels(endpoint, model, "completion").inc(observation.completion_tokens)
    error = _error_of(response) if status >= 400 else {}
    if status == 429:
        metrics.RATE_LIMITED.labels(metrics.rate_limit_reason(error)).inc()
    if settings.SLUICE_LOG_FORMAT != "json":
        return
    key = getattr(request, "auth", None)
    fields = {
        "request_id": getattr(request, "request_id", None),
        "method": request.method,
        "endpoint": endpoint,
        "status": status,
        "account_id": getattr(key, "account_id", None),
        "key_id": getattr(key, "pk", None),
        "model": model or None,
        "prompt_tokens": observation.prompt_tokens,
        "completion_tokens": observation.completion_tokens,
        "finish_reason": observation.finish_reason or None,
        "error_code": error.get("code"),
        "latency_ms": round(elapsed * 1000, 1),
        "ttft_ms": None if observation.ttft_seconds is None else round(observation.ttft_seconds * 1000, 1),
    }
    if observation.upstream:
        fields["upstream"] = observation.upstream
    logger.info("request", extra={"fields": fields})


def _report_when_sent(content, report):
    try:
        yield from content
    finally:
        report()


class RequestObservationMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        observation = observation_begin()
        response = self.get_response(request)
        if response.streaming:
            response.streaming_content = _report_when_sent(
                response.streaming_content, lambda: request_report(request, response, observation)
            )
        else:
            request_report(request, response, observation)
        return response
