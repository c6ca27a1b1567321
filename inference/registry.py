"""Which engine serves which model: the local one and the remote ones, side by side.

The local model (the process-wide engine of ``inference.engine``) is the zero-configuration default; a worker
with ``SLUICE_LOCAL_MODEL=0`` serves remote models only and never loads it. Remote models come from
``SLUICE_REMOTE_MODELS``; each gets one RemoteEngine per worker process, built on first use.
"""

from __future__ import annotations

import json
import threading

from django.conf import settings

from inference.engine import Engine, engine_if_loaded, get_engine


class UnknownModel(Exception):
    """No engine serves this model id here."""


def _local_model_id() -> str | None:
    if not settings.SLUICE_LOCAL_MODEL:
        return None
    engine = engine_if_loaded()
    return engine.model_id if engine is not None else settings.SLUICE_MODEL_ID


def available_models() -> list[str]:
    """Every model id served here: the local one first, then the remote ones in their configured order."""
    local = _local_model_id()
    return ([local] if local else []) + [model for model in settings.SLUICE_REMOTE_MODELS if model != local]


def engine_for(model_id: str) -> Engine:
    if model_id == _local_model_id():
        return get_engine()
    if model_id in settings.SLUICE_REMOTE_MODELS:
        return _remote_engine(model_id)
    raise UnknownModel(model_id)


def default_engine() -> Engine:
    """For requests that name no model (``POST /generate``): the local model, else the first remote one."""
    return engine_for(available_models()[0])


_remote: dict[str, tuple[str, Engine]] = {}
_remote_lock = threading.Lock()


def _fingerprint(config: dict) -> str:
    # Settings can change under a running process only in tests; a changed entry gets a fresh engine.
    timeouts = (settings.SLUICE_UPSTREAM_CONNECT_TIMEOUT_S, settings.SLUICE_UPSTREAM_READ_TIMEOUT_S)
    return json.dumps([config, timeouts], sort_keys=True)


def _remote_engine(model_id: str) -> Engine:
    from inference.remote_engine import RemoteEngine

    config = settings.SLUICE_REMOTE_MODELS[model_id]
    fingerprint = _fingerprint(config)
    with _remote_lock:
        entry = _remote.get(model_id)
        if entry is not None and entry[0] == fingerprint:
            return entry[1]
        if entry is not None:
            entry[1].close()
        engine = RemoteEngine.from_settings(model_id, config)
        engine.start_probes()
        _remote[model_id] = (fingerprint, engine)
        return engine


def remote_engines_loaded() -> list[Engine]:
    with _remote_lock:
        return [engine for _, engine in _remote.values()]


def remote_engines_start() -> None:
    """Build every remote engine now (worker start): their health probes run and their tokenizers are loaded
    before the first request."""
    for model_id in settings.SLUICE_REMOTE_MODELS:
        _remote_engine(model_id).warm_up()


def remote_engines_reset() -> None:
    """Close and forget the remote engines (tests; a later request builds them again from the settings)."""
    with _remote_lock:
        for _, engine in _remote.values():
            engine.close()
        _remote.clear()
