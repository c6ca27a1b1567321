"""Gunicorn settings for Sluice (`python -m gunicorn -c gunicorn.conf.py platform.wsgi`).

Threads, not processes, carry concurrency inside a worker: every request thread of a worker feeds the same
model, whose scheduler batches their forward passes. Each worker process holds its own copy of the model,
so add workers for CPU-bound gateway work or many cores, and hosts for more.
"""

import ctypes
import ctypes.util
import os
import shutil
import tempfile

# glibc gives each thread that allocates its own malloc arena (up to 8 per core); with 64 request threads
# touching tensors that fragments memory: peak RSS at 16 concurrent streams measured 1772 MB with the
# default and 1418 MB with 2 arenas, at the same tokens/s. Set here, before the workers fork, so it holds
# however the server is started. SLUICE_MALLOC_ARENAS=0 keeps glibc's default.
_M_ARENA_MAX = -8
_arenas = int(os.environ.get("SLUICE_MALLOC_ARENAS", "2"))
if _arenas > 0 and ctypes.util.find_library("c"):
    ctypes.CDLL(ctypes.util.find_library("c")).mallopt(_M_ARENA_MAX, _arenas)

bind = os.environ.get("SLUICE_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("SLUICE_WORKERS", "1"))
worker_class = "gthread"
# A streaming request holds its thread until the last token; allow many at once.
threads = int(os.environ.get("SLUICE_THREADS", "64"))
timeout = int(os.environ.get("SLUICE_WORKER_TIMEOUT", "120"))
graceful_timeout = 30
keepalive = 5
accesslog = os.environ.get("SLUICE_ACCESS_LOG", "-") or None  # empty: no access log
wsgi_app = "platform.wsgi:application"

# Gunicorn's own refusals (414, 431, 400) answer in the API's JSON error format, a request whose body is left
# unread (over SLUICE_MAX_BODY_BYTES: 413; chunked) says Connection: close, and one within the limit that the
# application did not read is read to its end, so keep-alive holds. See platform/gunicorn_http.py.
from platform import gunicorn_http  # noqa: E402

gunicorn_http.install()
pre_request = gunicorn_http.close_when_body_is_left_unread
post_request = gunicorn_http.read_what_is_left_of_the_body

# Prometheus: each worker counts in files under this directory and any worker's /metrics adds them all up
# (prometheus_client's multiprocess mode). Unset: a fresh directory for this server, removed when it stops.
# Two servers on one host need two directories.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="sluice-metrics-")
    os.environ["SLUICE_METRICS_DIR_OWNED"] = "1"


def on_starting(server):
    # Files left by an earlier run would add its counts to this one's.
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # its gauges stop counting; its counters stay in the totals


def on_exit(server):
    if os.environ.get("SLUICE_METRICS_DIR_OWNED") == "1":
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def post_worker_init(worker):
    # Load the model and the moderation detectors in the background as soon as the worker is up, so
    # /readyz turns true without a first request paying for it; earlier requests wait for the same load.
    from accounts.sweeper import sweeper_start
    from inference.warm_up import warm_up_in_background
    from inference.metrics_endpoint import sampler_start
    from inference.registry import remote_engines_start

    remote_engines_start()  # remote models: clients, probes, tokenizers, before requests and the warm-up thread
    warm_up_in_background()
    sampler_start()  # this worker's engine queue and batch figures, for whichever worker answers /metrics
    sweeper_start()  # heartbeats this worker's reservations, settles those dead workers left behind
