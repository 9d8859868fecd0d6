"""Every refusal is answered with one JSON shape, {"error": {"code", "message"[, "details"]}}, and a
status: 400 malformed JSON (bad_json; a key given twice in one object too), a body its Content-Encoding
does not decode (bad_body), search query (bad_query) or query parameter (bad_parameter: one the route
does not name, or a yes/no one that is not true, false, 1 or 0), 404 not_found, 409 conflict (which one:
details.reason, CONFLICT_REASONS), 415 a body whose Content-Type header is not JSON (unsupported_media_type),
408 a body not whole within the daemon's connection_idle_timeout (request_timeout), 413 a body over 256 MiB
(too_large: routes that read a body), 422 an invalid field (invalid; the message names the field, dotted:
metadata.a[2]), 429 a limit was reached, 503 the store is unavailable (store, busy), the home's database was
lost under the daemon (database_lost) or the daemon's stop cut a request's push short (stopping: a share, a
delete of a shared session), 507 the disk holding the home is full (disk_full, file_size_limit)."""

from typing import Annotated, Literal, NotRequired

from pydantic import Field, with_config
from typing_extensions import TypedDict

from .types import ANSWER

# Why a request was refused as 409 `conflict` (`details.reason`), for an app to act on without reading the message;
# the storage and sync layers, which import nothing of api/, give these names (tests/test_conflict_reasons.py holds
# every refusal to one of them). A newer daemon may add reasons: an app treats one it does not know as `conflict`.
ConflictReason = Literal[
    "exists",
    "case_twin",
    "paused",
    "ended",
    "read_only",
    "name_taken",
    "ambiguous",
    "written_meanwhile",
    "importing",
    "status",
    "other_device",
    "rekeyed",
    "not_expired",
]
CONFLICT_REASONS: dict[str, str] = {
    "exists": "the id given is taken: a session (or chat) of that id is here already, or a share code's or a session"
    " file's session is a different one of its id",
    "case_twin": "a session whose id differs from the one given only in case is here (on a case-insensitive disk the"
    " two would share one key file)",
    "paused": "the session is paused: resume it first",
    "ended": "the session has ended: its messages, chats and conversation are final (go on in a clone)",
    "read_only": "the session was imported with a read-only share code: this device follows it but cannot change it",
    "name_taken": "a chat's name or id would pick another chat of the session (names and ids pick chats)",
    "ambiguous": "several chats of the session have the name given: name the chat by its id",
    "written_meanwhile": "the chat was written to since it was read",
    "importing": "the session is being imported (from a share code or a file) already: wait for that import",
    "status": "a status change the session's lifecycle does not allow",
    "other_device": "this home has written sessions as another device than the share code's key names",
    "rekeyed": "another device rekeyed the session at the same time: pull (`sync`), then rekey again if still wanted",
    "not_expired": "the session was written to since it expired: it was not ended",
}


@with_config(ANSWER)
class ErrorDetails(TypedDict):
    """An error's details: what its message says, for an app to act on (each code's own fields: README, Errors)."""

    reason: NotRequired[
        Annotated[ConflictReason, Field(description="a 409 `conflict`'s reason: " + "; ".join(CONFLICT_REASONS))]
    ]


@with_config(ANSWER)
class ErrorDetail(TypedDict):
    code: str
    message: str
    details: NotRequired[ErrorDetails]


@with_config(ANSWER)
class Error(TypedDict):
    error: ErrorDetail


ERROR_STATUSES = {
    400: "malformed request",
    404: "unknown session, chat or message",
    408: "the request body did not arrive whole within connection_idle_timeout",
    409: "conflict; details.reason says which: "
    + "; ".join(f"{reason} ({meaning})" for reason, meaning in CONFLICT_REASONS.items())
    + " (other 409 codes: revoked, not_pushed, held_here, context_overflow, tool_call_unanswered, expired, ...)",
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
