"""Errors the storage layer raises; the daemon maps each `code` to an HTTP status."""

from __future__ import annotations


class SessiondError(Exception):
    code = "error"
    status = 400

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        self.details = details
        self.code = type(self).code
        self.status = type(self).status


class NotFound(SessiondError):
    code = "not_found"
    status = 404


class Conflict(SessiondError):
    code = "conflict"
    status = 409


class Invalid(SessiondError):
    code = "invalid"
    status = 422


class BadQuery(SessiondError):
    """A search query FTS5 cannot read. Not `invalid`: the field is well-formed text, its syntax is not."""

    code = "bad_query"
    status = 400


class LimitReached(SessiondError):
    code = "limit_reached"
    status = 429


class QuotaExceeded(SessiondError):
    code = "quota_exceeded"
    status = 429


def quota_ways_out(sid: str) -> str:
    """What a spent quota leaves, as commands that run: compacting frees context, never quota."""
    return (
        f"Raise the quota (`sessiond set {sid} --token-quota N`), or go on in a new session: "
        f"`sessiond clone {sid}` (same settings, no history) or `sessiond fork {sid} --at MESSAGE_ID` "
        f"(history up to that message). Compacting does not help: it frees context, not quota"
    )


class ContextOverflow(SessiondError):
    code = "context_overflow"
    status = 409


class IdempotencyKeyReused(SessiondError):
    code = "idempotency_key_reused"
    status = 422
