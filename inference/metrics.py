"""Prometheus metrics, and ``GET /metrics``.

Under gunicorn every worker is a process with its own counters; with ``PROMETHEUS_MULTIPROC_DIR`` set (the
repo's gunicorn.conf.py sets it) prometheus_client keeps them in files there and any worker's /metrics adds up
all of them. Gauges say how they combine across workers (``multiprocess_mode``).

Request-level figures (requests, status, latency, time to first token, tokens) are recorded once per request
by ``platform.observability`` from what the request's ``Observation`` gathered; engines and moderation record
their own events here.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import threading

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from platform.errors import error_body

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter("sluice_requests", "HTTP requests answered", ["endpoint", "model", "status"])
REQUEST_SECONDS = Histogram(
    "sluice_request_duration_seconds", "From request to last byte", ["endpoint", "model"], buckets=LATENCY_BUCKETS
)
FIRST_TOKEN_SECONDS = Histogram(
    "sluice_time_to_first_token_seconds", "From request to the first released text", ["endpoint", "model"],
    buckets=LATENCY_BUCKETS,
)
TOKENS = Counter("sluice_tokens", "Tokens charged, prompt (in) and completion (out)", ["endpoint", "model", "kind"])
RATE_LIMITED = Counter("sluice_rate_limited", "429 answers by reason", ["reason"])
MODERATION_ACTIONS = Counter("sluice_moderation_actions", "Moderation decisions in the request path", ["direction", "action"])
ENGINE_QUEUE_DEPTH = Gauge("sluice_engine_queue_depth", "Requests waiting for a batch slot", ["model"], multiprocess_mode="livesum")
ENGINE_BATCH_SIZE = Gauge("sluice_engine_batch_size", "Sequences decoded together", ["model"], multiprocess_mode="livesum")
UPSTREAM_HEALTHY = Gauge(
    "sluice_upstream_healthy", "1 when the upstream is in rotation (every worker agrees)", ["model", "upstream"],
    multiprocess_mode="livemin",
)
UPSTREAM_OUTSTANDING = Gauge(
    "sluice_upstream_outstanding", "Requests in flight to the upstream", ["model", "upstream"], multiprocess_mode="livesum"
)
UPSTREAM_REQUESTS = Counter("sluice_upstream_requests", "Requests sent upstream by outcome", ["model", "upstream", "outcome"])

SAMPLE_EVERY_S = 5.0


def rate_limit_reason(error: dict) -> str:
    """The reason label of a 429 from its error body (see accounts.throttling and accounts.services)."""
    if error.get("code") == "insufficient_quota":
        return "quota"
    return {"requests": "requests_per_minute", "tokens": "tokens_per_minute"}.get(error.get("type"), "other")


def engines_sample() -> None:
    """Copy the engines' queue depth and batch size (``engine.stats()``) into the gauges of this process."""
    from inference.engine import engine_if_loaded
    from inference.registry import remote_engines_loaded

    local = engine_if_loaded()
    if local is not None:
        stats = local.stats()
        ENGINE_QUEUE_DEPTH.labels(local.model_id).set(stats.get("waiting", 0))
        ENGINE_BATCH_SIZE.labels(local.model_id).set(stats.get("running", 0))
    for engine in remote_engines_loaded():
        engine.stats()  # remote engines keep their upstream gauges current themselves


_sampler: threading.Thread | None = None


def sampler_start() -> None:
    """Sample this worker's engines every few seconds, so any worker's /metrics shows every worker's queue."""
    global _sampler
    if _sampler is not None:
        return

    def run():
        stop = threading.Event()
        while not stop.wait(SAMPLE_EVERY_S):
            try:
                engines_sample()
            except Exception:
                logger.exception("Sampling engine stats failed")

    _sampler = threading.Thread(target=run, name="metrics-sampler", daemon=True)
    _sampler.start()


def _client_address(request):
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return None


def metrics_access_allowed(request) -> bool | None:
    """None when /metrics is off (no token, no networks); else whether every configured check passes."""
    token, networks = settings.SLUICE_METRICS_TOKEN, settings.SLUICE_METRICS_ALLOWED_NETWORKS
    if not token and not networks:
        return None
    if token:
        scheme, _, presented = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
            return False
    if networks:
        address = _client_address(request)
        if address is None or not any(address in network for network in networks):
            return False
    return True


def metrics_view(request):
    allowed = metrics_access_allowed(request)
    if allowed is None:
        return JsonResponse(error_body(f"Unknown URL: {request.path}", type="invalid_request_error", code="not_found"), status=404)
    if not allowed:
        return JsonResponse(error_body("Not allowed to read metrics.", type="permission_error", code="permission_denied"), status=403)
    engines_sample()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
