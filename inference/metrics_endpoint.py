"""``GET /metrics``, and the sampler that copies the engines' queue and batch figures into the gauges.

Under gunicorn every worker is a process with its own counters; with ``PROMETHEUS_MULTIPROC_DIR`` set (the
repo's gunicorn.conf.py sets it) prometheus_client keeps them in files there and any worker's /metrics adds up
all of them.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import threading

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from inference.engines.factory import engine_if_loaded
from inference.fair_sharing import account_shares
from inference.metrics import (
    ENGINE_ACCOUNT_QUEUED,
    ENGINE_ACCOUNT_RUNNING,
    ENGINE_ACCOUNT_SHARE,
    ENGINE_ACCOUNT_TOKENS,
    ENGINE_BATCH_SIZE,
    ENGINE_QUEUE_DEPTH,
)
from inference.registry import remote_engines_loaded
from platform.errors import error_body

logger = logging.getLogger(__name__)

SAMPLE_EVERY_S = 5.0


def engines_sample() -> None:
    """Copy the engines' queue depth and batch size (``engine.stats()``) into the gauges of this process."""
    local = engine_if_loaded()
    if local is not None:
        stats = local.stats()
        ENGINE_QUEUE_DEPTH.labels(local.model_id).set(stats.get("waiting", 0))
        ENGINE_BATCH_SIZE.labels(local.model_id).set(stats.get("running", 0))
    for engine in remote_engines_loaded():
        engine.stats()  # remote engines keep their upstream gauges current themselves
    accounts_sample()


_tokens_seen: dict[tuple[str, str], int] = {}
_accounts_seen: set[tuple[str, str]] = set()
_sample_lock = threading.Lock()


def accounts_sample() -> None:
    """Copy the per-account figures of fair sharing into their gauges; an account gone idle reads 0."""
    with _sample_lock:
        current = set()
        for row in account_shares():
            labels = (row["model"], row["account"])
            current.add(labels)
            ENGINE_ACCOUNT_RUNNING.labels(*labels).set(row["running"])
            ENGINE_ACCOUNT_QUEUED.labels(*labels).set(row["queued"])
            ENGINE_ACCOUNT_SHARE.labels(*labels).set(row["share"])
            before = _tokens_seen.get(labels, 0)
            # An account forgotten while idle starts counting again from 0.
            delta = row["tokens"] - before if row["tokens"] >= before else row["tokens"]
            if delta:
                ENGINE_ACCOUNT_TOKENS.labels(*labels).inc(delta)
            _tokens_seen[labels] = row["tokens"]
        for labels in _accounts_seen - current:
            for gauge in (ENGINE_ACCOUNT_RUNNING, ENGINE_ACCOUNT_QUEUED, ENGINE_ACCOUNT_SHARE):
                gauge.labels(*labels).set(0)
            _tokens_seen.pop(labels, None)
        _accounts_seen.clear()
        _accounts_seen.update(current)


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
