"""The OpenAI-compatible endpoint's errors, in OpenAI's shape: {"error": {"message", "type", "param", "code"}}
(openai_compat.py): a SessiondError as the app's SDK reads it (its status, its retry)."""

from __future__ import annotations

from aiohttp import web

from ..storage.errors import SessiondError
from ..storage.redact import hide_share_codes
from .openai_names import named

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def oai_error(
    status: int, code: str, message: str, sid: str | None = None, headers: dict | None = None, **more: object
) -> web.Response:
    """OpenAI's error shape; `more`: its `param`, and fields of sessiond's own beside OpenAI's in the error
    object (`completion`: a refused answer's)."""
    quota = code in ("quota_exceeded", "provider_quota_exceeded")
    typ = "insufficient_quota" if quota else _TYPES.get(status, "api_error")
    h = {**(headers or {}), **named(sid)}
    message = hide_share_codes(message)  # (one pasted into a header, the chat's: quoted by the refusal)
    return web.json_response(
        {"error": {"message": message, "type": typ, "param": None, "code": code, **more}}, status=status, headers=h
    )


def refusal(exc: SessiondError, sid: str | None, chat: str | None = None, **more: object) -> web.Response:
    headers = named(None, chat)  # (the session's: oai_error's)
    details = exc.details if isinstance(exc.details, dict) else {}
    after = details.get("retry_after")
    if after is not None:
        headers["Retry-After"] = str(int(after + 0.999))
    status, code, param = exc.status, exc.code, details.get("param")
    if code == "provider_rejected" and 400 <= details.get("provider_status", 0) < 500:
        # the app gets the provider's own refusal (a 400 is the SDK's BadRequestError), with its code
        status, code = details["provider_status"], details.get("provider_code") or code
    elif code == "context_overflow":  # as OpenAI refuses a context too long for its model
        status, code, param = 400, "context_length_exceeded", "messages"
    elif status == 409:
        # a session that takes no more (ended, expired, paused, read-only; no provider for it): OpenAI's
        # SDKs retry a 409 (a lock timeout, to them), each retry refused again; a 400 they do not
        status = 400
    elif code in NOT_RETRIED:  # OpenAI's own status, but no retry mends it before the user does
        headers["x-should-retry"] = "false"
    return oai_error(status, code, exc.message, sid, headers=headers, param=param, **more)


# refusals and failures with a status OpenAI's SDKs retry (429, 5xx) that stand until the user changes something:
# a spent quota, a full session; a provider refusing sessiond's key, a key sessiond cannot read, an answer too
# large to keep (each retry asked the provider again with the refused key, or had it generate that answer again),
# the provider's account out of quota
NOT_RETRIED = frozenset(
    {
        "quota_exceeded",
        "limit_reached",
        "provider_unauthorized",
        "provider_key_unreadable",
        "provider_answer_too_large",
        "provider_quota_exceeded",
    }
)
