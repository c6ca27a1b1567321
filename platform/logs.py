"""Logging pieces: JSON log lines (``SLUICE_LOG_FORMAT=json``) and a filter for expected "not ready" answers.

A record logged with ``extra={"fields": {...}}`` has those fields merged into its object; the per-request
line (``platform.observability``) is logged that way.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class NotReadyIsNoError(logging.Filter):
    """Drops Django's ERROR record for a 503 from ``/readyz``: "not ready yet" is that probe's expected answer
    while the model loads (a load balancer polls it), not a server error worth an ERROR line per poll."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        return not (getattr(record, "status_code", None) == 503 and getattr(request, "path", None) == "/readyz")
