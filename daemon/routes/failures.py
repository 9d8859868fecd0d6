"""A failed request's answer, in the API's one error shape (api/errors.py): what a handler raised, as a
status and a JSON body. The socket API's routes (daemon/api.py) and the append stream's frames
(routes/appends.py) answer every failure through it, so the two answer the same error the same way."""

import json
import logging
from typing import Any

from aiohttp import web

from ...storage.errors import (
    RAISE_FILE_SIZE_LIMIT,
    DiskFull,
    FileSizeLimit,
    SessiondError,
    file_size_limit,
    is_disk_full,
    past_file_size_limit,
)
from ...storage.redact import scrub_text

log = logging.getLogger("sessiond.api")

BODY_LIMIT = 256 << 20  # the largest request body the socket API reads (aiohttp's client_max_size)


def error_body(code: str, message: str, **details) -> dict:
    # a store URL quoted in an error (a share code's store, an import's --store) shows no credentials
    err: dict[str, Any] = {"code": code, "message": scrub_text(message)}
    if details:
        err["details"] = details
    return {"error": err}


def too_large() -> dict:
    """A body over BODY_LIMIT (aiohttp's 413, in our shape)."""
    return error_body(
        "too_large",
        f"request body is over the {BODY_LIMIT >> 20} MiB a request may carry: send less at once (a batch of"
        f" messages as several appends)",
        limit=BODY_LIMIT,
    )


def home_of(daemon: object) -> str | None:
    """The home folder of `daemon` that failure() names in a full disk's answer (None: a daemon without one)."""
    return getattr(getattr(daemon, "home", None), "path", None)


def lost_instead(exc: Exception, daemon: object) -> Exception:
    """`exc`, or the database_lost refusal if it is SQLite's failing on a database file lost under `daemon` (a
    shorter copy over it: "database disk image is malformed" on pages past its end, on any connection)."""
    db = getattr(daemon, "db", None)
    return exc if db is None else db.c.as_lost(exc)


def failure(exc: Exception, where: str, home: str | None) -> tuple[int, dict]:
    """The status and body answering `exc`, raised by `where` (e.g. "POST /v1/sessions/x/messages", for the
    log), in the daemon whose home is `home`: a SessiondError as it says; a JSON HTTP error (a body that is
    not JSON) as it was made; a full disk a 507 saying where and what to do; anything else a bug, logged
    with its traceback and answered without internals."""
    if isinstance(exc, SessiondError):
        return exc.status, error_body(exc.code, exc.message, **exc.details)
    if isinstance(exc, web.HTTPException) and exc.content_type == "application/json" and exc.text:
        return exc.status, json.loads(exc.text)
    limit = file_size_limit(exc)  # (first: a write cut short at the limit is SQLite's full disk too)
    if limit is not None:
        return _size_limit(exc, where, home, limit)
    if is_disk_full(exc, home):
        return _disk_full(exc, where, home)
    log.exception("internal error on %s", where)
    return 500, error_body("internal", "internal error; see the daemon log")


def _disk_full(exc: Exception, where: str, home: str | None) -> tuple[int, dict]:
    """A write that met a full disk: 507, saying where and what to do. SQLite rolled its transaction back,
    so nothing of the request was stored; a retry once there is room does it whole."""
    disk = f"the disk holding sessiond's home ({home})" if home else "the disk holding sessiond's home"
    log.warning("%s: disk full: %s", where, exc)
    err = DiskFull(
        f"{disk} is full ({exc}): nothing of this request was stored. Free some space on it, then send the"
        f" request again",
        owner=[f"free some space on {disk}"],  # (its owner's way: details.owner)
    )
    return err.status, error_body(err.code, err.message, **err.details)


def _size_limit(exc: Exception, where: str, home: str | None, limit: int) -> tuple[int, dict]:
    """A write that met the daemon's file-size limit (RLIMIT_FSIZE): 507, naming the limit and how to raise it.
    SQLite rolled its transaction back, so nothing of the request was stored."""
    files = f"a file in sessiond's home ({home})" if home else "a file in sessiond's home"
    log.warning("%s: past the file-size limit (%d bytes): %s", where, limit, exc)
    err = FileSizeLimit(
        f"{files} cannot grow past {past_file_size_limit(limit)} ({exc}): nothing of this request was stored."
        f" {RAISE_FILE_SIZE_LIMIT.capitalize()}, then send the request again",
        limit=limit,
        owner=[RAISE_FILE_SIZE_LIMIT],
    )
    return err.status, error_body(err.code, err.message, **err.details)
