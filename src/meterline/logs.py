"""Structured logs: one JSON object per line on stderr, for every long-running process.

Each line has ``time`` (RFC 3339, UTC), ``level``, ``component`` (``meterline-api``,
``meterline-worker``), ``logger``, ``message`` and every ``extra={...}`` field the call
passed (``logger.warning("conflict", extra={"customer": c, "id": i})``), so a log
pipeline can filter on them without parsing prose. ``METERLINE_LOG_FORMAT=text`` gives
plain lines for a terminal; ``METERLINE_LOG_LEVEL`` sets the level (default INFO).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

LEVEL_ENV = "METERLINE_LOG_LEVEL"
FORMAT_ENV = "METERLINE_LOG_FORMAT"
DEFAULT_LEVEL = "INFO"

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """A record as one JSON object (extras included, anything unserializable as text)."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "component": self.component,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                document[name] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, separators=(",", ":"))


def configure_logging(component: str) -> None:
    """Send the process's logs to stderr as JSON lines (or text, see the module)."""
    level = os.environ.get(LEVEL_ENV, DEFAULT_LEVEL).upper()
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get(FORMAT_ENV, "json") == "text":
        handler.setFormatter(logging.Formatter(f"{component}: %(levelname)s %(message)s"))
    else:
        handler.setFormatter(JsonFormatter(component))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if level in logging.getLevelNamesMapping() else DEFAULT_LEVEL)
    # the HTTP clients and servers say too much at INFO
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
