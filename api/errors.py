"""Every refusal is answered with one JSON shape, {"error": {"code", "message"[, "details"]}}, and a
status: 400 malformed JSON (bad_json; a key given twice in one object too), a body its Content-Encoding
does not decode (bad_body), search query (bad_query) or query parameter (bad_parameter: one the route
does not name, or a yes/no one that is not true, false, 1 or 0), 404 not_found, 409 conflict and the codes of
CODES_409 (which one, of those that are several: details.reason, REASONS), 415 a body whose Content-Type header
is not JSON (unsupported_media_type), 408 a body not whole within the daemon's connection_idle_timeout
(request_timeout), 413 a body over 256 MiB (too_large: routes that read a body), 422 an invalid field (invalid;
the message names the field, dotted: metadata.a[2]), 429 a limit was reached, 503 the store is unavailable
(store, busy), the home's database was lost under the daemon (database_lost) or the daemon's stop cut a
request's push short or a model's answer (stopping: a share, a delete of a shared session, a question), 507 the
disk holding the home is full (disk_full, file_size_limit)."""

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
    "read_only": "the session was imported with a read-only share code: this device follows it but cannot change it"
    " (nor make a checkpoint of it, share it for writing, rekey it or end access to it)",
    "name_taken": "a chat's name or id would pick another chat of the session (names and ids pick chats)",
    "ambiguous": "several chats of the session have the name given: name the chat by its id",
    "written_meanwhile": "the chat was written to since it was read",
    "importing": "the session (or one whose id differs from it only in case) is being imported (from a share code or"
    " a file) already, hidden till that import ends: wait for it",
    "status": "a status change the session's lifecycle does not allow",
    "other_device": "this home has written sessions as another device than the share code's key names",
    "rekeyed": "another device rekeyed the session at the same time: pull (`sync`), then rekey again if still wanted",
    "not_expired": "the session was written to since it expired: it was not ended",
}


# The 409 codes of their own that are several refusals whose ways on differ: which one, in `details.reason` too
# (names distinct from every other code's, so that one type holds them all: Reason).
ContextOverflowReason = Literal["over_budget", "beside_fixed", "compaction_off", "system_kept"]
NoProviderReason = Literal["none_configured", "no_default", "not_configured"]
ExpiredReason = Literal["expires_at", "idle_timeout"]
MembersFullReason = Literal["writers", "sealed_keys", "frozen_logs"]
Reason = Literal[ConflictReason, ContextOverflowReason, NoProviderReason, ExpiredReason, MembersFullReason]
REASONS: dict[str, dict[str, str]] = {
    "conflict": CONFLICT_REASONS,
    "context_overflow": {
        "over_budget": "the messages alone pass the chat's context budget: send them in smaller parts, or raise it",
        "beside_fixed": "the messages do not fit beside the system prompt and initial messages, which go with every"
        " question: send less, shorten the prompt, or raise the budget",
        "compaction_off": "the chat's automatic compaction is off: compacting it makes room (or turn it on)",
        "system_kept": "the chat's own system messages, which every compaction keeps, leave no room: send less, or"
        " raise the budget",
    },
    "no_provider": {
        "none_configured": "this device's config.toml configures no model provider: its owner adds one",
        "no_default": "several providers are configured and none is the default: name one (the request's"
        " `provider`, or the session's or chat's settings.provider; details.configured lists them)",
        "not_configured": "the provider named (details.provider: by the request, or by the session's or chat's"
        " settings, which sync from other devices) is not configured here: name another (details.configured)",
    },
    "expired": {
        "expires_at": "the session's expires_at passed",
        "idle_timeout": "the session was idle for longer than its idle timeout",
    },
    "members_full": {
        "writers": "the session's members list would hold too many writers: drop those no longer used by a rekey",
        "sealed_keys": "a rekey's notice would seal the new key for too many writers kept: drop more of them",
        "frozen_logs": "a rekey's new members list would hold too many frozen logs: drop fewer writers",
    },
}
# Every code the daemon answers with 409, and what tells an app what to do beside its message (details.api and
# details.owner, the ways on, aside): its details.reason, or the code alone, with the details named.
CODES_409: dict[str, str] = {
    "conflict": "the state of what the request names refuses it; details.reason says which",
    "revoked": "a rekey left this device out of the session: a new share code imported here lets it write again",
    "not_pushed": "a shared session's delete while changes written here wait to be pushed (details.pending)",
    "held_here": "a revoked session's delete while it holds writes of this device no other device has (details.held)",
    "expired": "the session passed its expiry (details.expired_at; details.reason: why): go on in a new session",
    "context_overflow": "the chat's context budget cannot take the messages; details.reason: whether compacting"
    " helps (details.budget, adding, fixed, active: tokens)",
    "tool_call_unanswered": "the chat ends in tool calls no result answers (details.tool_call_ids)",
    "no_provider": "no model provider here answers the request; details.reason says why",
    "not_shared": "a rekey or unshare of a session never shared from this device",
    "behind": "an import's device log is under a key from before a rekey this home does not hold (details.owner)",
    "members_full": "a members list past its size limit, nothing written; details.reason says which way to drop"
    " (details.api: the requests)",
}


def reasons_said(code: str) -> str:
    """`code`'s reasons and what each means, in one line (the OpenAPI document's words)."""
    return "; ".join(f"{reason} ({meaning})" for reason, meaning in REASONS[code].items())


@with_config(ANSWER)
class ErrorDetails(TypedDict):
    """An error's details: what its message says, for an app to act on (each code's own fields: README, Errors)."""

    reason: NotRequired[
        Annotated[
            Reason,
            Field(
                description="which refusal a 409 is, of the codes that are several: "
                + "; ".join(f"{code}: {', '.join(reasons)}" for code, reasons in REASONS.items())
            ),
        ]
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
    409: "; ".join(
        f"{code}: {said}" + (f" ({reasons_said(code)})" if code in REASONS else "") for code, said in CODES_409.items()
    ),
    415: "a request body whose Content-Type is not JSON",
    422: "invalid field",
    429: "a limit was reached",
    503: (
        "the store is unavailable (store, busy), the home's database was lost under the daemon (database_lost), or"
        " the daemon's stop cut the push a share or a shared session's delete waited for short, or stopped a"
        " model's answer (stopping); a"
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
