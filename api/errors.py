"""Every refusal is answered with one JSON shape, {"error": {"code", "message"[, "details"]}}, and a
status: 400 malformed JSON (bad_json; a key given twice in one object too), a body its Content-Encoding
does not decode (bad_body), search query (bad_query) or query parameter (bad_parameter: one the route
does not name, or a yes/no one that is not true, false, 1 or 0), 404 not_found, 409 conflict, 415 a body
whose Content-Type header is not JSON (unsupported_media_type), 408 a body not whole within the daemon's
connection_idle_timeout (request_timeout), 413 a body over 256 MiB (too_large: routes that read a body), 422 an
invalid field (invalid; the message names the field, dotted: metadata.a[2]), 429 a limit was reached, 503 the
store is unavailable (store, busy), the home's database was lost under the daemon (database_lost) or the daemon's
stop cut a request's push short (stopping: a share, a delete of a shared session), 507 the
disk holding the home is full (disk_full, file_size_limit)."""

from typing import NotRequired

from pydantic import with_config
from typing_extensions import TypedDict

from .types import ANSWER


@with_config(ANSWER)
class ErrorDetail(TypedDict):
    code: str
    message: str
    details: NotRequired[dict]


@with_config(ANSWER)
class Error(TypedDict):
    error: ErrorDetail


ERROR_STATUSES = {
    400: "malformed request",
    404: "unknown session, chat or message",
    408: "the request body did not arrive whole within connection_idle_timeout",
    409: "conflict",
    415: "a request body whose Content-Type is not JSON",
    422: "invalid field",
    429: "a limit was reached",
    503: (
        "the store is unavailable (store, busy), the home's database was lost under the daemon (database_lost), or"
        " the daemon's stop cut the push a share or a shared session's delete waited for short (stopping); a"
        " `store` refusal's details.store names the store, failure its class (unreachable, timeout, full, ...), retry"
        " whether the same request may succeed later with no one acting, retry_after the seconds the store asked to"
        " wait (when it said), owner what mends it in words"
    ),
    507: "the disk holding the daemon's home is full (nothing was stored)",
}
# A body over 256 MiB (daemon/routes/failures.py BODY_LIMIT), refused before any route reads it: every route that
# takes a body may answer it.
BODY_STATUSES = {413: "the request body is over 256 MiB (too_large; details.limit)"}
# Statuses only some routes answer with (named in their Route's `errors`).
EXTRA_STATUSES = {502: "the model provider failed, refused or cannot be reached", 504: "the model provider timed out"}
