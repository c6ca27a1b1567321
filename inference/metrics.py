"""Prometheus metrics: the instruments every part of the service records into (``GET /metrics`` is
``inference.metrics_endpoint``).

Under gunicorn every worker is a process with its own counters; with ``PROMETHEUS_MULTIPROC_DIR`` set (the
repo's gunicorn.conf.py sets it) prometheus_client keeps them in files there and any worker's /metrics adds up
all of them. Gauges say how they combine across workers (``multiprocess_mode``).

Request-level figures (requests, status, latency, time to first token, tokens) are recorded once per request
by ``platform.observability`` from what the request's ``Observation`` gathered; engines and moderation record
their own events here.
"""

from __future__ import annotations


from prometheus_client import Counter, Gauge, Histogram

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
# Fair sharing (inference/fair_queue.py), by account id ("" for work no account asked for); per worker, summed.
ENGINE_ACCOUNT_RUNNING = Gauge(
    "sluice_engine_account_running", "Sequences decoding for the account (remote models: requests outstanding)",
    ["model", "account"], multiprocess_mode="livesum",
)
ENGINE_ACCOUNT_QUEUED = Gauge(
    "sluice_engine_account_queued", "The account's requests waiting for a batch slot", ["model", "account"],
    multiprocess_mode="livesum",
)
ENGINE_ACCOUNT_SHARE = Gauge(
    "sluice_engine_account_share", "The account's share (0-1) of what the worker's engine decoded over the last ~64 "
    "steps (remote models: of the outstanding requests); per worker", ["model", "account"], multiprocess_mode="liveall",
)
ENGINE_ACCOUNT_TOKENS = Counter(
    "sluice_engine_account_decoded_tokens", "Tokens decoded for the account (local model); the share over any "
    "window is rate() of this over its sum", ["model", "account"],
)
UPSTREAM_HEALTHY = Gauge(
    "sluice_upstream_healthy", "1 when the upstream is in rotation (every worker agrees)", ["model", "upstream"],
    multiprocess_mode="livemin",
)
UPSTREAM_OUTSTANDING = Gauge(
    "sluice_upstream_outstanding", "Requests in flight to the upstream", ["model", "upstream"], multiprocess_mode="livesum"
)
UPSTREAM_REQUESTS = Counter("sluice_upstream_requests", "Requests sent upstream by outcome", ["model", "upstream", "outcome"])


def rate_limit_reason(error: dict) -> str:
    """The reason label of a 429 from its error body (see accounts.throttling and accounts.services)."""
    if error.get("code") == "insufficient_quota":
        return "quota"
    return {"requests": "requests_per_minute", "tokens": "tokens_per_minute",
            "concurrency": "concurrent_requests"}.get(error.get("type"), "other")
