"""The daemon's log: JSON lines in <home>/logs/sessiond.log (0600), never a secret in them."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import sys
import time

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


SAY_EVERY = 60.0  # seconds between two reports on stderr of log lines dropped


class LogFile(logging.Handler):
    """The log file, one write of a whole line per record. A line it cannot write (the disk full, a file-size
    limit) is dropped, not left half written (a short write is cut back off), and said on standard error once
    a minute at most while that lasts, rather than Python's 'Logging error' and a traceback for every line;
    the first line written again is preceded by one saying how many were dropped."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.dropped = 0
        self._said = -math.inf  # when the failure was last said on stderr (time.monotonic())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode()
        except Exception:  # (a record that cannot be formatted: logging's own report)
            self.handleError(record)
            return
        if self.dropped:
            gap = logging.makeLogRecord(
                {"name": "sessiond", "levelno": logging.WARNING, "levelname": "WARNING", "msg": "", "args": None}
            )
            gap.msg = f"{self.dropped} log line(s) could not be written and were dropped"
            if not self._write((self.format(gap) + "\n").encode()):
                self.dropped += 1
                return
            self.dropped = 0
        if not self._write(line):
            self.dropped += 1

    def _write(self, data: bytes) -> bool:
        try:
            done = os.write(self.fd, data)
        except OSError as exc:
            self._failed(exc)
            return False
        if done == len(data):
            return True
        try:  # a short write (the disk filled within it): the torn line cut back off
            os.ftruncate(self.fd, os.fstat(self.fd).st_size - done)
        except OSError:
            pass
        self._failed(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        return False

    def _failed(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._said < SAY_EVERY:
            return  # (said already while it lasts: a nearly full disk takes some lines and not others)
        self._said = now
        try:
            sys.stderr.write(
                f"sessiond: cannot write its log {self.path} ({exc.strerror or exc}): its lines are dropped until it"
                f" can (is the disk holding it full?)\n"
            )
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
        super().close()


def setup_logging(home: Home, foreground: bool) -> None:
    root = logging.getLogger("sessiond")
    root.setLevel(logging.INFO)
    root.handlers.clear()
    handler = LogFile(os.path.join(home.logs, "sessiond.log"))
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.propagate = False
