"""Gunicorn settings for Sluice (`python -m gunicorn -c gunicorn.conf.py platform.wsgi`).

Threads, not processes, carry concurrency inside a worker: every request thread of a worker feeds the same
model, whose scheduler batches their forward passes. Each worker process holds its own copy of the model,
so add workers for CPU-bound gateway work or many cores, and hosts for more.
"""

import os

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


def post_worker_init(worker):
    # Load the model and the moderation detectors in the background as soon as the worker is up, so
    # /readyz turns true without a first request paying for it; earlier requests wait for the same load.
    from inference.engine import warm_up_in_background

    warm_up_in_background()
