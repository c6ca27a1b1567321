"""Start-up: load every model this process serves, in the background, so /readyz can say when all are in.

It sits above the engine factory, the registry of remote models, the task models and moderation's
detectors, and is called once per worker (gunicorn's post_fork, the development server's ready()).
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings

from inference.engines.factory import get_engine
from inference.registry import remote_engines_start
from inference.task_models import task_models_load_in_background, task_models_status
from moderation.detectors import detectors_load_in_background, detectors_status

logger = logging.getLogger(__name__)


def warm_up_in_background() -> threading.Thread:
    """Start loading the engine without blocking (server start); /readyz turns true when done."""

    def load():
        try:
            if settings.SLUICE_LOCAL_MODEL:
                get_engine()
            remote_engines_start()  # their clients and health probes; remote models load nothing
        except Exception:
            logger.exception("Engine failed to load")

    # transformers resolves its top-level names lazily, and two threads resolving them at once can fail
    # ("cannot import name 'AutoModelForCausalLM'": seen when the task models and the generator loaded together),
    # so the names the loaders use are resolved here, in this one thread, before any of them starts.
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, DynamicCache  # noqa: F401

    if detectors_status() == "not loaded":
        detectors_load_in_background()  # at the same time as the model: ready in the longest of the three
    if settings.SLUICE_LOCAL_MODEL and task_models_status() == "not loaded":
        task_models_load_in_background()  # the task endpoints, like the local model, only where it is served
    thread = threading.Thread(target=load, name="engine-warm-up", daemon=True)
    thread.start()
    return thread
