"""The process-wide local engine: which implementation SLUICE_ENGINE picks, loaded once per process.

It sits above the implementations (``fake``, ``transformers_engine``) and below everything that asks for
"the engine" (services, the registry of served models, the warm-up at start).
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings

from inference.engines.base import Engine
from moderation.model_loading import model_loading_lock

logger = logging.getLogger(__name__)

_engine: Engine | None = None
_engine_lock = threading.Lock()
_engine_error: str | None = None


def _build_engine() -> Engine:
    if not settings.SLUICE_LOCAL_MODEL:
        raise RuntimeError("This worker serves no local model (SLUICE_LOCAL_MODEL=0)")
    if settings.SLUICE_ENGINE == "fake":
        from inference.engines.fake import FakeEngine

        # A server's fake engine keeps no history: a soak would otherwise measure its lists growing.
        return FakeEngine(token_delay_s=settings.SLUICE_FAKE_TOKEN_DELAY_S, remember=False)
    if settings.SLUICE_ENGINE == "transformers":
        from inference.engines.transformers_engine import TransformersEngine

        return TransformersEngine.from_settings()
    raise RuntimeError(f"Unknown SLUICE_ENGINE {settings.SLUICE_ENGINE!r}")


def get_engine() -> Engine:
    """The process-wide engine, loaded on first use; concurrent first callers load it once."""
    global _engine, _engine_error
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                started = time.monotonic()
                try:
                    with model_loading_lock:  # never beside another model's from_pretrained
                        _engine = _build_engine()
                except Exception as error:
                    _engine_error = f"{type(error).__name__}: {error}"
                    raise
                logger.info("Engine %s ready in %.1f s", _engine.model_id, time.monotonic() - started)
    return _engine


def engine_if_loaded() -> Engine | None:
    return _engine


def engine_status() -> str:
    if _engine is not None:
        return "ready"
    if _engine_lock.locked():
        return "loading"
    return f"failed: {_engine_error}" if _engine_error else "not loaded"


def set_engine(engine: Engine | None) -> None:
    """Install an engine (tests, the benchmark) or forget the current one."""
    global _engine
    with _engine_lock:
        _engine = engine
