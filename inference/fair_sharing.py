"""What fair sharing gave each account, per served model, for /metrics and the admin dashboard.

Reads this worker's engines (the local model's scheduler queue, each remote model's gate); the figures are
``inference.fair_queue.AccountStats``: rows decoding (remote: requests outstanding), requests waiting, the
account's share of the tokens decoded over the last ~64 steps (remote: of the outstanding requests, sampled),
and tokens decoded since the account was last idle.
"""

from __future__ import annotations

import logging

from inference.engines.factory import engine_if_loaded
from inference.registry import remote_engines_loaded

logger = logging.getLogger(__name__)


def account_shares() -> list[dict]:
    """One row per (model, account) this worker's engines know of, heaviest first."""
    rows = []
    engines = [engine_if_loaded(), *remote_engines_loaded()]
    for engine in engines:
        if engine is None:
            continue
        try:
            stats = engine.account_stats()
        except Exception:  # a report must never take the dashboard or /metrics down
            logger.exception("Reading the account shares of %s failed", engine.model_id)
            continue
        for item in stats:
            rows.append({"model": engine.model_id, "account": item.account, "weight": item.weight,
                         "running": item.running, "queued": item.queued, "share": item.share, "tokens": item.tokens})
    rows.sort(key=lambda row: (row["model"], -row["share"], -row["running"], row["account"]))
    return rows
