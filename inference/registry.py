"""Which engine serves which model: the local one and the remote ones, side by side.

The local model (the process-wide engine of ``inference.engines.factory``) is the zero-configuration default; a worker
with ``SLUICE_LOCAL_MODEL=0`` serves remote models only and never loads it. Remote models and aliases come
from the catalogue (``SLUICE_REMOTE_MODELS`` overlaid with the database's entries, ``inference.catalogue``);
each remote model gets one RemoteEngine per worker process, built on first use and rebuilt when it changes.
"""

from __future__ import annotations

import json
import threading

from django.conf import settings

from inference.catalogue import catalogue_current, catalogue_forget
from inference.engines.base import Engine
from inference.engines.factory import engine_if_loaded, get_engine
from inference.engines.remote import RemoteEngine


class UnknownModel(Exception):
    """No engine serves this model id here."""


def _local_model_id() -> str | None:
    if not settings.SLUICE_LOCAL_MODEL:
        return None
    engine = engine_if_loaded()
    return engine.model_id if engine is not None else settings.SLUICE_MODEL_ID


def available_models() -> list[str]:
    """Every model id served here: the local one first, then the remote ones and the aliases of served models."""
    local = _local_model_id()
    catalogue = catalogue_current()
    served = ([local] if local else []) + [model for model in catalogue.remote if model != local]
    return served + [alias for alias, target in catalogue.aliases.items() if target in served and alias not in served]


def engine_for(model_id: str) -> Engine:
    """The engine serving ``model_id`` now. A request keeps the engine it got: a later change to the catalogue
    builds a new engine for new requests and lets this one finish (``RemoteEngine.retire``)."""
    catalogue = catalogue_current()
    _sweep(catalogue)
    target = catalogue.aliases.get(model_id, model_id)
    if target == _local_model_id():
        return get_engine()
    if target in catalogue.remote:
        return _remote_engine(target, catalogue.remote[target])
    raise UnknownModel(model_id)


def default_engine() -> Engine:
    """For requests that name no model (``POST /generate``): the local model, else the first remote one."""
    return engine_for(available_models()[0])


_remote: dict[str, tuple[str, Engine]] = {}
_remote_lock = threading.Lock()
_swept_revision: tuple | None = None


def _fingerprint(config: dict) -> str:
    # A changed entry (catalogue or settings) gets a fresh engine.
    timeouts = (settings.SLUICE_UPSTREAM_CONNECT_TIMEOUT_S, settings.SLUICE_UPSTREAM_READ_TIMEOUT_S)
    return json.dumps([config, timeouts], sort_keys=True)


def _sweep(catalogue) -> None:
    """Retire the engines of models no longer served (removed or disabled)."""
    global _swept_revision
    if catalogue.revision == _swept_revision:
        return
    with _remote_lock:
        for model_id in [m for m in _remote if m not in catalogue.remote]:
            _remote.pop(model_id)[1].retire()
        _swept_revision = catalogue.revision


def _remote_engine(model_id: str, config: dict) -> Engine:
    fingerprint = _fingerprint(config)
    with _remote_lock:
        entry = _remote.get(model_id)
        if entry is not None and entry[0] == fingerprint:
            return entry[1]
        if entry is not None:
            entry[1].retire()  # requests running on it finish on the configuration they started with
        engine = RemoteEngine.from_settings(model_id, config, local_engine=get_engine if settings.SLUICE_LOCAL_MODEL else None)
        engine.start_probes()
        _remote[model_id] = (fingerprint, engine)
        return engine


def remote_engines_loaded() -> list[Engine]:
    with _remote_lock:
        return [engine for _, engine in _remote.values()]


def remote_engines_start() -> None:
    """Build every remote engine now (worker start): their health probes run and their tokenizers are loaded
    before the first request."""
    for model_id, config in catalogue_current().remote.items():
        _remote_engine(model_id, config).warm_up()


def remote_engines_reset() -> None:
    """Close and forget the remote engines and the catalogue read (tests; a later request builds them again)."""
    global _swept_revision
    with _remote_lock:
        for _, engine in _remote.values():
            engine.close()
        _remote.clear()
        _swept_revision = None
    catalogue_forget()
