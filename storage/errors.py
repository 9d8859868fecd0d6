"""Errors the storage layer raises; the daemon maps each `code` to an HTTP status."""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import sqlite3
from urllib.parse import quote


def crash_at(name: str) -> None:
    """A fault hook for the crash tests: SESSIOND_CRASH_AT=name makes the daemon die here at once, as under
    kill -9 (sync/errors.py's crash_point, for the storage layer, which imports nothing of sync/)."""
    if os.environ.get("SESSIOND_CRASH_AT") == name:
        os._exit(137)


class SessiondError(Exception):
    code = "error"
    status = 400

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        self.details = details
        self.code = type(self).code
        self.status = type(self).status


class UnusableDatabase(Exception):
    """The database file cannot be used by this sessiond: written by a newer one (a higher schema
    version), or not a database at all (damaged, truncated). The message names the file, what is wrong
    and what to do; nothing was changed."""


class NotFound(SessiondError):
    code = "not_found"
    status = 404


class Conflict(SessiondError):
    """A request the state of what it names refuses (409). A plain `conflict` says which refusal it is in
    `details.reason` (api/errors.py CONFLICT_REASONS: "exists", "paused", "ended", "read_only", ...), so that an app
    need not parse the message. Of the codes of their own (api/errors.py CODES_409), those that are several refusals
    whose ways on differ (context_overflow, expired, ...) say which in a reason of their own (REASONS)."""

    code = "conflict"
    status = 409

    def __init__(self, message: str, *, reason: str | None = None, **details):
        if reason is not None:
            details["reason"] = reason
        super().__init__(message, **details)


class NoLongerExpired(SessiondError):
    """An expiry's end of a session written to since its expiry was found (a shared one's idle end waits for a
    pull, and a write here meanwhile is taken: storage/expiry.py expired_for_writes): it is active, not ended.
    Raised in the end's own transaction (Sessions.update), so that no write commits between the look and the end;
    the clean-up passes it by. (Not a Conflict: what catches those, a read-only import's refusal, must not take it.)"""

    code = "conflict"
    status = 409


# ---------------------------------------------------------------------------------------------- ways on, in API terms
# A refusal whose message names CLI commands as its way on also carries that way as socket API requests, in
# its error's `details.api` (README, "The socket API", Errors): an app that talks to the API has no CLI. Each
# item is one way on, in the message's order: requests "METHOD PATH [BODY]", one after another joined by
# " then "; N, MESSAGE_ID, CODE, SESSION_ID, CHAT, RESULT, QUESTION, DEVICE and INVITE stand for what the app
# fills in.
# A way on that is no request to this daemon, only its owner's to take (a config.toml limit raised, an upgrade,
# another store or home, a relay's invite asked for), is in `details.owner` instead, in words.


def session_path(sid: str, *more: str) -> str:
    """The API path of session `sid` (and of `more` below it)."""
    return "/".join([f"/v1/sessions/{quote(sid, safe='')}", *(quote(m, safe="") for m in more)])


# a share code (CODE) imported on this device
IMPORT_HERE = 'POST /v1/import {"code": CODE} here'


def share_again(sid: str, who: str) -> str:
    """A new read-write code from `who` (a device that writes the session), imported here: in API terms."""
    return f'POST {session_path(sid, "share")} {{"write": true}} on {who}, then {IMPORT_HERE}'


def sync_wait(sid: str) -> str:
    """`sessiond sync ID --wait`: the session pushed and pulled now, answered when done."""
    return f'POST /v1/sync {{"session": {json.dumps(sid)}, "wait": true}}'


def sync_then_delete(sid: str) -> str:
    return f"{sync_wait(sid)}, then DELETE {session_path(sid)}"


def force_delete(sid: str) -> str:
    return f"DELETE {session_path(sid)}?force=true"


def new_session_ways(sid: str, *, fork: bool = True) -> list[str]:
    """A clone (same settings, no history) and, `fork`, a fork of the history up to a message."""
    return [f"POST {session_path(sid, 'clone')}"] + (
        [f'POST {session_path(sid, "fork")} {{"at": MESSAGE_ID}}'] if fork else []
    )


def new_chat_way(sid: str) -> str:
    """`sessiond chat new ID --switch`: a new chat, made the current one."""
    return f'POST {session_path(sid, "chats")} {{"switch": true}}'


def switch_chat_way(sid: str) -> str:
    """`sessiond chat switch ID CHAT`: another of the session's chats made the current one."""
    return f'POST {session_path(sid, "switch")} {{"chat": CHAT}}'


def free_active_ways(user: str | None) -> list[str]:
    """The active-session limits' ways on (`user`: the one whose limit it is, else the daemon's): the active
    sessions the limit counts listed, then one of them (SESSION_ID) paused, ended or deleted."""
    listed = "GET /v1/sessions?status=active" + ("" if user is None else f"&user={quote(user, safe='')}")
    one = session_path("SESSION_ID")
    return [f"{listed}, then {way}" for way in (f"POST {one}/pause", f"POST {one}/end", f"DELETE {one}")]


def read_only(sid: str, doing: str = "change it") -> Conflict:
    """The refusal of a change to a session this device imported with a read-only code. Its way out is a
    command for another device (one that writes the session), so no --home of this one is added to it."""
    return Conflict(
        f"session {sid!r} was imported with a read-only share code; this device can follow it but not {doing}"
        f" (ask for a read-write code: `sessiond share {sid} --write` on a device that writes it, then"
        f" `sessiond import` here)",
        reason="read_only",
        api=[share_again(sid, "a device that writes it")],
    )


class Revoked(Conflict):
    """A change to a session this device was left out of a rekey of (`sessiond unshare --device`, `rekey
    --drop`, on another device): nothing it writes could reach any other device."""

    code = "revoked"


class NotPushed(Conflict):
    """A delete (`rm`) of a shared session that holds changes of this device its store has not taken yet:
    deleting it would lose them for every device it is shared with (and for an import of its code again)."""

    code = "not_pushed"


def not_pushed(sid: str, pending: int) -> NotPushed:
    """The refusal of `rm` of shared session `sid` while `pending` changes of this device wait to be pushed."""
    return NotPushed(
        f"session {sid!r} is shared and {pending} change(s) written here are not pushed yet (its store has not"
        f" taken them): deleting it now would lose them for every device it is shared with; nothing was deleted"
        f" (push them first: `sessiond sync {sid} --wait` once the store answers, then `sessiond rm {sid}`; or"
        f" give them up: `sessiond rm {sid} --force`)",
        pending=pending,
        api=[sync_then_delete(sid), force_delete(sid)],
    )


class HeldHere(NotPushed):
    """A delete (`rm`) of a session a rekey left this device out of, holding what this device wrote after the
    rekey read its log: on no other device, sent only once a new code is imported here."""

    code = "held_here"


def held_said(held: dict) -> str:
    """What a revoked session holds here only (Database.held_here), said: "2 messages written here after that
    rekey read this device's log are held here only (no other device has them)"."""
    messages, other = held["messages"], held["changes"]
    what = [f"{messages} message{'s' if messages != 1 else ''}"] if messages else []
    if other:
        what.append(f"{other} other change{'s' if other != 1 else ''}")
    if held["known"]:
        return (
            f"{' and '.join(what)} written here after that rekey read this device's log"
            f" {'are' if messages + other > 1 else 'is'} held here only (no other device has them)"
        )
    return (
        f"the rekey does not say how far it read this device's log: what this device wrote here ({' and '.join(what)})"
        " may be held here only"
    )


def held_here(sid: str, held: dict) -> HeldHere:
    """The refusal of `rm` of revoked session `sid` while `held` (Database.held_here) is held here only."""
    ways = (
        f"send them: ask a device that kept it for a new share code, `sessiond share {sid} --write` on that device,"
        f" and `sessiond import` it here: they go out with this device's log; or give them up: `sessiond rm {sid}"
        " --force`"
    )
    said = f"session {sid!r} was rekeyed without this device, and {held_said(held)}"
    return HeldHere(
        f"{said}: deleting it would lose them; nothing was deleted ({ways})",
        held=held,
        api=[share_again(sid, "a device that kept it"), force_delete(sid)],
    )


# a session's `access` values that refuse every change: a read-only import, a device left out of a rekey
NOT_WRITABLE = ("read", "revoked")


def revoked(sid: str, doing: str = "change it") -> Revoked:
    """The refusal of a change to a session that was rekeyed without this device. What it holds stays
    readable and exportable here; the way on is a new code from a device that kept it, imported here."""
    return Revoked(
        f"session {sid!r} was rekeyed without this device (another device ended its access): it keeps what it"
        f" has, readable and exportable, but cannot {doing}, as nothing written here would reach any other"
        f" device (ask a device that kept it for a new share code: `sessiond share {sid} --write` on that device,"
        f" then `sessiond import` it here)",
        api=[share_again(sid, "a device that kept it")],
    )


def check_access(sid: str, access: str, doing: str = "change it") -> None:
    """Refuse a change to a session whose `access` is one of NOT_WRITABLE, saying why and what to do."""
    if access == "read":
        raise read_only(sid, doing)
    if access == "revoked":
        raise revoked(sid, doing)


class Expired(Conflict):
    """A write to a session past its expiry (`expires_at`): refused, and the session is being ended as the
    clean-up ends it."""

    code = "expired"


class Invalid(SessiondError):
    code = "invalid"
    status = 422


class BadQuery(SessiondError):
    """A search query FTS5 cannot read. Not `invalid`: the field is well-formed text, its syntax is not."""

    code = "bad_query"
    status = 400


class BadParameter(SessiondError):
    """A query-string parameter that is none of the values it takes (a yes/no one that is not true, false,
    1 or 0): the request itself is malformed, as for bad JSON."""

    code = "bad_parameter"
    status = 400


class BadBody(SessiondError):
    """A request body that cannot be read as sent: what its Content-Encoding header names does not decode it
    (a body labelled gzip that is not). Malformed, as bad JSON is."""

    code = "bad_body"
    status = 400


class BodyTimeout(SessiondError):
    """A request body that did not arrive whole within the daemon's connection_idle_timeout: an app that
    sends the headers and then stalls would otherwise hold its connection (and a handler) for good."""

    code = "request_timeout"
    status = 408


class UnsupportedMediaType(SessiondError):
    """A request body labelled (its Content-Type header) as something other than JSON, such as the form
    encoding `curl -d` sends: refused rather than read as JSON regardless."""

    code = "unsupported_media_type"
    status = 415


def raise_setting(setting: str, value: object) -> str:
    """The owner's way past a config.toml limit (`details.owner`): the setting raised, the daemon restarted."""
    return f"raise {setting} in the daemon's config.toml (now {value}), then restart the daemon"


class LimitReached(SessiondError):
    """A config.toml limit reached: `details.limit` names the setting, `details.value` its value, and
    `details.owner` its owner's way on, raising it (the app's own ways, if any, in `details.api`)."""

    code = "limit_reached"
    status = 429

    def __init__(self, message: str, **details):
        if "limit" in details and "owner" not in details:
            details["owner"] = [raise_setting(details["limit"], details.get("value"))]
        super().__init__(message, **details)


class QuotaExceeded(SessiondError):
    code = "quota_exceeded"
    status = 429


def quota_exhausted(sid: str, used: int, quota: int) -> str:
    """A spent quota said plainly: used X of Y, and how far past it (a model's answer recorded past the
    quota, or a quota lowered below the use: either can leave it so)."""
    over = f" ({used - quota} over)" if used > quota else ""
    return f"session {sid!r} has exhausted its token quota: used {used} of its {quota} tokens{over}"


def quota_short(sid: str, used: int, quota: int, messages: list, tokens: int) -> str:
    """Room left under the quota, but not enough for `messages` (`tokens` together): how many more they need."""
    them = "this message needs" if len(messages) == 1 else f"these {len(messages)} messages need"
    return f"session {sid!r} has used {used} of its {quota} tokens; {them} {tokens} more"


def quota_too_small(sid: str, used: int, quota: int, messages: list, tokens: int) -> str:
    """Messages of more tokens than the whole quota: no clone or fork (the same quota) takes them either, so
    the ways on are a larger quota, or less sent."""
    them = "this message needs" if len(messages) == 1 else f"these {len(messages)} messages need"
    return (
        f"session {sid!r} has used {used} of its {quota} tokens; {them} {tokens}, more than its whole token quota"
        f" ({quota}), which a clone or a fork keeps too. Raise the quota (`sessiond set {sid} --token-quota N`),"
        " or send less"
    )


def quota_ways_api(sid: str, *, copies: bool = True) -> list[str]:
    """quota_ways_out's ways, in API terms (`details.api`); `copies`: the clone and the fork among them."""
    return [f'PATCH {session_path(sid)} {{"token_quota": N}}', *(new_session_ways(sid) if copies else [])]


def quota_ways_out(sid: str) -> str:
    """What a refusal for a spent quota names as the ways out (of an append, and of a question to a model), as
    commands that run: compacting frees context, never quota."""
    return (
        f"Raise the quota (`sessiond set {sid} --token-quota N`), or go on in a new session: `sessiond clone {sid}` "
        f"(same settings, no history) or `sessiond fork {sid} --at MESSAGE_ID` (history up to that message, and the "
        f"tokens it used). Compacting does not help: it frees context, not quota"
    )


class ContextOverflow(SessiondError):
    code = "context_overflow"
    status = 409


class ToolCallUnanswered(Conflict):
    """A model asked to go on from a chat that ends in tool calls no tool's result answers yet."""

    code = "tool_call_unanswered"


class IdempotencyKeyReused(SessiondError):
    code = "idempotency_key_reused"
    status = 422


class DatabaseLost(SessiondError):
    """The database file was deleted or replaced under the running daemon (storage/dbfile.py): writes are
    refused until it is restarted, as what they wrote would be lost."""

    code = "database_lost"
    status = 503


class Stopping(SessiondError):
    """A request that waited for a push the daemon's stop cut short (a `share`, an `rm` of a shared session):
    not done, and not for the store's sake. Its message names what was not done and the way on."""

    code = "stopping"
    status = 503


def stopping(not_done: str, again: str) -> Stopping:
    """The refusal of a request whose push the daemon's stop cut short: `not_done`, and `again` once it runs."""
    return Stopping(
        f"the daemon is stopping: {not_done} (its push was cut short by the stop, not refused by the store);"
        f" start the daemon again (`sessiond start`), then {again}"
    )


class LostSaid:
    """A background loop's rounds failing on the database lost under the daemon (DatabaseLost: for good, until its
    restart): logged once, as a warning saying what and what to do, not as a failure with its traceback each round
    (the follower's is every poll_interval, 0.25 s)."""

    def __init__(self, log: logging.Logger, what: str):
        self._log = log
        self._what = what
        self._said = False

    def failed(self, exc: DatabaseLost) -> None:
        if not self._said:
            self._said = True
            self._log.warning("%s: not done while the database is lost: %s", self._what, exc.message)


class DiskFull(SessiondError):
    """The disk holding the daemon's home has no room (or the user's disk quota is used up): the write
    that met it was rolled back whole."""

    code = "disk_full"
    status = 507


# Free space on the disk holding a database below which SQLite's I/O error on it is taken for a full disk: the
# most one write may need at once there (the WAL kept allocated ahead, 32 MB, and a large transaction's frames).
LOW_SPACE = 64 << 20


def is_disk_full(exc: BaseException, where: str | None = None) -> bool:
    """Whether `exc` is a full disk: SQLite's SQLITE_FULL ("database or disk is full") or a system call's
    ENOSPC / EDQUOT; or, given `where` (a folder on the database's disk), SQLite's I/O error while that disk has
    less than LOW_SPACE free: SQLite reports ENOSPC as SQLITE_FULL only from a plain write, and as "disk I/O
    error" where it grows its WAL index (SQLITE_IOERR_SHMSIZE) or a file by a size hint (SQLITE_IOERR_WRITE)."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code == sqlite3.SQLITE_FULL:
            return True
        return code is not None and code & 0xFF == sqlite3.SQLITE_IOERR and where is not None and _low_space(where)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _low_space(where: str) -> bool:
    try:
        st = os.statvfs(where)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < LOW_SPACE


class FileSizeLimit(SessiondError):
    """A write past the process's file-size limit (RLIMIT_FSIZE): the write that met it was rolled back whole."""

    code = "file_size_limit"
    status = 507


def past_file_size_limit(limit: int) -> str:
    """What a write past the file-size limit `limit` (file_size_limit) met, and the way on, as every refusal of
    one says it: '... past PAST_FILE_SIZE_LIMIT(limit) ...; RAISE_FILE_SIZE_LIMIT, then ...'."""
    return (
        f"this daemon's file-size limit, {limit} bytes (RLIMIT_FSIZE: `ulimit -f`, or LimitFSIZE= in its service unit)"
    )


RAISE_FILE_SIZE_LIMIT = "restart the daemon with the limit raised (`ulimit -f unlimited` in the shell that starts it)"


def file_size_limit(exc: BaseException) -> int | None:
    """The file-size limit in force (RLIMIT_FSIZE's soft limit, in bytes) when `exc` may be a write it stopped:
    EFBIG, or SQLite's write I/O error or full disk (SQLite reports EFBIG as SQLITE_IOERR_WRITE, and a write
    cut short at the limit as SQLITE_FULL). None with no such limit, or for any other error."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit == resource.RLIM_INFINITY:
        return None
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return limit if code is not None and code & 0xFF in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL) else None
    return limit if isinstance(exc, OSError) and exc.errno == errno.EFBIG else None
