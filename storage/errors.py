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


class ContextOverflow(SessiondError):
    code = "context_overflow"
    status = 409


class IdempotencyKeyReused(SessiondError):
    code = "idempotency_key_reused"
    status = 422
