"""The daemon's log: JSON lines in <home>/logs/sessiond.log (0600), never a secret in them; capped at
MAX_LOG_BYTES, its older lines in sessiond.log.1 (the newest) to sessiond.log.KEEP_LOGS, the oldest dropped."""

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
MAX_LOG_BYTES = 10 * 1024 * 1024  # sessiond.log's size past which it is moved aside as sessiond.log.1
KEEP_LOGS = 3  # the older logs kept (sessiond.log.1 to .3): at most 40 MiB in all, whatever the daemon's uptime


def move_aside(path: str) -> None:
    """A log file moved aside as PATH.1 (renames: each keeps its mode), the older ones shifted (.1 to .2...),
    the oldest past KEEP_LOGS dropped. OSError goes to the caller."""
    for n in range(KEEP_LOGS - 1, 0, -1):
        if os.path.exists(f"{path}.{n}"):
            os.replace(f"{path}.{n}", f"{path}.{n + 1}")
    os.replace(path, f"{path}.1")


def cap_output(path: str) -> None:
    """daemon.out (`path`: what `start`'s daemon, or the service's, writes on its standard output and error,
    appended to by each start) moved aside if it is past MAX_LOG_BYTES and this process's standard output or
    error is that file; those then write to a new one. Only the daemon that holds the home's lock calls it:
    a start losing a race to another (or beside one still starting) never moves the file that one writes to."""
    try:
        st = os.stat(path)
        if st.st_size <= MAX_LOG_BYTES:
            return
        mine = [fd for fd in (1, 2) if _is_file(fd, st)]
        if not mine:  # (a daemon in the foreground, or written elsewhere: not this process's to move)
            return
        move_aside(path)
        new = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:  # (none; or it cannot be moved, or opened again: written to as before)
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    for fd in mine:
        os.dup2(new, fd)
    os.close(new)


def _is_file(fd: int, st: os.stat_result) -> bool:
    try:
        own = os.fstat(fd)
    except OSError:
        return False
    return (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)


class LogFile(logging.Handler):
    """The log file, one write of a whole line per record. A line it cannot write (the disk full, a file-size
    limit) is dropped, not left half written (a short write is cut back off), and said on standard error once
    a minute at most while that lasts, rather than Python's 'Logging error' and a traceback for every line;
    the first line written again is preceded by one saying how many were dropped. A line that would take the
    file past MAX_LOG_BYTES first moves it aside (sessiond.log.1, the older ones shifted, the oldest past
    KEEP_LOGS dropped), so that a daemon running for months keeps a bounded log."""

    def __init__(self, path: str):
        self.path = path
        self.fd = self._open()  # (before the handler is made: one whose file failed to open is not closed at exit)
        super().__init__()
        self.size = os.fstat(self.fd).st_size
        self._moved = False  # the file written to moved aside, the new one not opened yet (_rotate)
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

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # (O_CREAT's mode: 0600 only)

    def _rotate(self) -> None:
        """The log moved aside as sessiond.log.1 (renames: each file keeps its 0600), a new one opened. Moved
        once only: when the new one cannot be opened (no file descriptor left, EMFILE), the lines go on into
        the one moved aside (still open), and the next line tries the open again, never the move (which would
        shift the file written to on to .2 and .3, drop the older ones, and, sessiond.log gone, fail for good)."""
        try:
            if not self._moved:
                move_aside(self.path)
                self._moved = True
            fd = self._open()
        except OSError as exc:  # (the disk full, the folder not writable: the lines go on into this one)
            self._failed(exc, f"cannot move its log {self.path} aside ({exc.strerror or exc}): its lines go on into it")
            return
        self._moved = False
        os.close(self.fd)
        self.fd, self.size = fd, 0

    def _write(self, data: bytes) -> bool:
        if self.size and self.size + len(data) > MAX_LOG_BYTES:
            self._rotate()
        try:
            done = os.write(self.fd, data)
        except OSError as exc:
            self._failed(exc)
            return False
        if done == len(data):
            self.size += done
            return True
        try:  # a short write (the disk filled within it): the torn line cut back off
            os.ftruncate(self.fd, os.fstat(self.fd).st_size - done)
        except OSError:
            pass
        self._failed(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        return False

    def _failed(self, exc: OSError, said: str = "") -> None:
        now = time.monotonic()
        if now - self._said < SAY_EVERY:
            return  # (said already while it lasts: a nearly full disk takes some lines and not others)
        self._said = now
        try:
            said = said or (
                f"cannot write its log {self.path} ({exc.strerror or exc}): its lines are dropped until it can"
            )
            sys.stderr.write(f"sessiond: {said} (is the disk holding it full?)\n")
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
