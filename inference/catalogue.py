"""The served catalogue as each worker sees it: ``SLUICE_REMOTE_MODELS`` overlaid with the database's entries.

Each worker reads ``CatalogueVersion`` at most every ``SLUICE_CATALOGUE_POLL_S`` seconds (one one-row query)
and re-reads the entries only when the number moved, so a change made on any host reaches every worker of
every host within that bound, without a restart. The process that made a change sees it at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

from django.conf import settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Catalogue:
    remote: dict[str, dict]  # model id -> its config, as platform.env.remote_models_from_env gives it
    aliases: dict[str, str]  # public name -> the served model it stands for
    revision: tuple  # changes whenever what is served may have changed


_lock = threading.Lock()
_rows: list = []
_version: int | None = None
_checked_at = float("-inf")


def _entry_config(entry) -> dict:
    from inference.secrets_box import secret_decrypt

    if entry.api_key_env:
        api_key = os.environ.get(entry.api_key_env, "")
        if not api_key:
            logger.warning("Catalogue model %s: environment variable %s is not set here", entry.name, entry.api_key_env)
    else:
        api_key = secret_decrypt(entry.api_key_encrypted)
        if api_key is None:
            logger.error("Catalogue model %s: its stored upstream key cannot be read (SECRET_KEY changed?); "
                         "enter it again", entry.name)
            api_key = ""
    return {"urls": [url.rstrip("/") for url in entry.urls], "api_key": api_key, "tokenizer": entry.tokenizer,
            "upstream_model": entry.upstream_model or entry.name, "context_window": entry.context_window,
            "defaults": dict(entry.defaults or {})}


def _refresh() -> None:
    global _rows, _version, _checked_at
    from inference.models import CatalogueEntry, CatalogueVersion

    now = time.monotonic()
    if now - _checked_at < settings.SLUICE_CATALOGUE_POLL_S:
        return
    with _lock:
        if now - _checked_at < settings.SLUICE_CATALOGUE_POLL_S:
            return
        try:
            version = CatalogueVersion.objects.filter(pk=1).values_list("number", flat=True).first() or 0
            if version != _version:
                _rows = [(entry.name, entry.enabled, entry.alias_of, None if entry.alias_of else _entry_config(entry))
                         for entry in CatalogueEntry.objects.all()]
                _version = version
        except Exception as error:  # noqa: BLE001 - an overlay: keep serving what was last read (the setting's
            # models at least) through a database outage or where no database may be used; the next poll retries
            logger.warning("The model catalogue could not be read: %s: %s", type(error).__name__, error)
        _checked_at = now


def catalogue_current() -> Catalogue:
    _refresh()
    rows, version = _rows, _version
    remote = dict(settings.SLUICE_REMOTE_MODELS)
    aliases: dict[str, str] = {}
    for name, enabled, alias_of, config in rows:
        remote.pop(name, None)
        if not enabled:
            continue
        if alias_of:
            aliases[name] = alias_of
        else:
            remote[name] = config
    return Catalogue(remote=remote, aliases=aliases, revision=(version, id(settings.SLUICE_REMOTE_MODELS)))


def catalogue_changed() -> None:
    """This process changed the catalogue: read it again on the next request."""
    global _checked_at, _version
    with _lock:
        _checked_at, _version = float("-inf"), None


def catalogue_forget() -> None:
    """Forget what was read (tests: a rolled-back change sends no signal)."""
    global _rows
    catalogue_changed()
    with _lock:
        _rows = []
