"""The daemon's log: JSON lines in <home>/logs/sessiond.log (0600), never a secret in them."""

from __future__ import annotations

import json
import logging
import os

from ..storage.redact import scrub_text
from .home import Home


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub_text(record.getMessage()),  # a store URL's credentials never reach the log
        }
        for key in ("session", "event", "error", "rev", "objects", "bytes"):
            if hasattr(record, key):
                value = getattr(record, key)
                out[key] = scrub_text(value) if isinstance(value, str) else value
        if record.exc_info:
            out["traceback"] = scrub_text(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


def setup_logging(home: Home, foreground: bool) -> None:
    root = logging.getLogger("sessiond")
    root.setLevel(logging.INFO)
    root.handlers.clear()
    path = os.path.join(home.logs, "sessiond.log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    handler = logging.StreamHandler(os.fdopen(fd, "a", buffering=1))
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.propagate = False
