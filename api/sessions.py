"""Sessions: their settings, policy, the create and change requests, and the session as answered."""

from typing import Annotated, Any, Literal, NotRequired

from pydantic import AfterValidator, BeforeValidator, ConfigDict, with_config
from pydantic.config import JsonDict
from typing_extensions import TypedDict

from .messages import MessageIn
from .types import (
    ANSWER,
    BODY,
    MAX_TEXT,
    MAX_TOKENS,
    QUERY,
    YEARS_10,
    JsonObject,
    Name,
    Number,
    QueryBool,
    QueryInt,
    Seconds,
    SessionId,
    Status,
    Tags,
    Text,
    refuse,
)

# What a request gives instead of an empty model or user (api/types.py's Name).
NONE_OR_NULL = "leave it out for none (null clears it)"
EVERY_USER = "leave it out for every user's"
LIST_EVERY_USER = f"{EVERY_USER} (no_user=true: the sessions with none)"

# One range per number field, (low, high, whole): the models below, and the checks of operations other
# devices push (daemon/validate.py), are built from these.
SETTING_RANGES = {
    "temperature": (0, 10, False),
    "top_k": (1, 1 << 31, True),
    "top_p": (0, 1, False),
    "max_tokens": (1, 1 << 31, True),
}
POLICY_RANGES = {
    "token_quota": (1, 1 << 50, True),
    "checkpoint_interval": (1, MAX_TOKENS, True),
    "idle_timeout": (1, YEARS_10, False),
    "max_context_tokens": (1, MAX_TOKENS, True),
    "context_margin": (0.05, 1, False),
}
CHAT_POLICY = ("max_context_tokens", "context_margin", "auto_compact")
POLICY_SHORTCUTS = tuple(POLICY_RANGES) + ("auto_compact",)


def _n(ranges: dict, key: str) -> Any:
    lo, hi, whole = ranges[key]
    return Seconds(lo, hi) if key == "idle_timeout" else Number(lo, hi, integer=whole)


@with_config(BODY)
class Settings(TypedDict, total=False):
    """Model settings. In a PATCH each field given replaces the current one and a null removes it."""

    temperature: _n(SETTING_RANGES, "temperature") | None
    top_k: _n(SETTING_RANGES, "top_k") | None
    top_p: _n(SETTING_RANGES, "top_p") | None
    max_tokens: _n(SETTING_RANGES, "max_tokens") | None
    provider: Text(100, min_len=1) | None  # a [providers.NAME] of config.toml that answers for it (issue 16)


@with_config(BODY)
class ChatPolicy(TypedDict, total=False):
    """A chat's context policy. A null removes a field (the session's or the daemon's value applies)."""

    max_context_tokens: _n(POLICY_RANGES, "max_context_tokens") | None
    context_margin: _n(POLICY_RANGES, "context_margin") | None
    auto_compact: bool | None


@with_config(BODY)
class Policy(ChatPolicy, total=False):
    """A session's policy: its chats' context policy, a token quota, checkpoints, idling."""

    token_quota: _n(POLICY_RANGES, "token_quota") | None
    checkpoint_interval: _n(POLICY_RANGES, "checkpoint_interval") | None
    idle_timeout: _n(POLICY_RANGES, "idle_timeout") | None


@with_config(BODY)
class _SessionFields(Policy, total=False):
    # Policy's fields are also accepted at the top level, as shortcuts for `policy`.
    user: Name(NONE_OR_NULL) | None
    name: Text() | None
    system_prompt: Text(MAX_TEXT) | None
    model: Name(NONE_OR_NULL) | None
    settings: Settings | None
    initial_messages: list[MessageIn] | None
    metadata: JsonObject | None
    tags: Tags | None
    preferences: JsonObject | None
    expires_at: Number(0, 1e11) | None
    expires_in: Seconds(1, YEARS_10) | None
    policy: Policy | None


# expires_at and expires_in are alternatives: not both given (as numbers, not null).
_ONE_EXPIRY: JsonDict = {
    "not": {
        "required": ["expires_at", "expires_in"],
        "properties": {"expires_at": {"type": "number"}, "expires_in": {"type": "number"}},
    }
}


@with_config(ConfigDict(**BODY, json_schema_extra=_ONE_EXPIRY))
class SessionCreate(_SessionFields, total=False):
    """A new session; null is the same as leaving a field out. A policy field is given in `policy` or at the top
    level (its shortcut), not both. An `expires_at` (seconds since the epoch) already past is refused (422)."""

    id: SessionId | None


@with_config(ConfigDict(**BODY, json_schema_extra={**_ONE_EXPIRY, "minProperties": 1}))
class SessionPatch(_SessionFields, total=False):
    """Changes to a session: the fields given replace the current ones; null clears a field. settings and
    policy (with its shortcuts) are merged per field; a policy field is given in `policy` or as its shortcut,
    not both. An `expires_at` already past is refused (422): end a session with POST /v1/sessions/{id}/end."""


def _one_expiry(body: dict) -> dict:
    if body.get("expires_at") is not None and body.get("expires_in") is not None:
        raise refuse("give expires_at or expires_in, not both")
    return body


def _no_status(body: Any) -> Any:
    if isinstance(body, dict) and "status" in body:
        raise refuse("status changes through POST /v1/sessions/{id}/pause, /resume or /end")
    return body


def _something(body: dict) -> dict:
    if not body:
        raise refuse("nothing to change: give at least one field")
    return body


# The request bodies as checked, whole-body rules included.
CreateBody = Annotated[SessionCreate, AfterValidator(_one_expiry)]
PatchBody = Annotated[
    SessionPatch, BeforeValidator(_no_status), AfterValidator(_something), AfterValidator(_one_expiry)
]


# ------------------------------------------------------------------------------------------- answers
@with_config(ANSWER)
class IdleEndWaits(TypedDict):
    """Why a shared session past its idle timeout is still active (daemon/sharedidle.py): its idle end waits for a
    pull of it to succeed."""

    since: float  # when it passed its idle timeout (by the activity this device saw)
    pull_error: str | None  # why its last pull failed; null while one is under way or asked


@with_config(ANSWER)
class HeldHere(TypedDict):
    """What a device a rekey left out wrote after the rekey read its log: held here only (sync/rekey.py)."""

    messages: int
    changes: int  # other than messages (a chat made, a rename, ...)
    known: bool  # false: the rekey did not say how far it read this device's log; all it wrote is counted


@with_config(ANSWER)
class Session(TypedDict):
    id: str
    status: Status
    current_chat: str | None
    created_at: float
    user: NotRequired[str | None]
    name: NotRequired[str | None]
    system_prompt: NotRequired[str | None]
    model: NotRequired[str | None]
    settings: NotRequired[dict]
    initial_messages: NotRequired[list]
    metadata: NotRequired[dict]
    tags: NotRequired[list[str]]
    preferences: NotRequired[dict]
    last_activity: NotRequired[float]
    expires_at: NotRequired[float | None]
    # made here, imported with a read-write or read-only code, or rekeyed without this device since (no write)
    access: NotRequired[Literal["owner", "write", "read", "revoked"]]
    tokens_used: NotRequired[int]  # counted against policy.token_quota
    policy: NotRequired[dict]  # token_quota, checkpoint_interval, idle_timeout, and its chats' context policy
    provenance: NotRequired[dict | None]  # a clone's or a fork's: {kind, session[, message, copied_tokens]}
    message_count: NotRequired[int]
    chat_count: NotRequired[int]
    tokens: NotRequired[int]
    sync: NotRequired[dict]
    # a session a rekey left this device out of (access `revoked`): what this device wrote that the rekey did
    # not carry over, on no other device; `rm` refuses (409 held_here) until a new code is imported, which
    # sends it. Absent when nothing is held here only.
    held_here: NotRequired[HeldHere]
    # a shared session past its idle timeout, still active: its end waits for a pull to confirm that no other
    # device wrote meanwhile (GET /v1/sessions/ID and GET /v1/stats?session=ID only). Absent otherwise.
    idle_end_waits: NotRequired[IdleEndWaits]


@with_config(ANSWER)
class Snapshot(TypedDict):
    """Where this device's latest pushed snapshot of a session is (docs/FORMATS.md)."""

    revision: int  # its head's
    head_key: str  # the head's public key, hex
    manifest_ipfs_cid: str
    manifest_blake3: str  # hex


@with_config(ANSWER)
class Ended(Session):
    """An ended session, as `end` answers: its checkpoints (the last one final) and its pushed snapshot."""

    checkpoints: NotRequired[list[dict]]
    snapshot: NotRequired[Snapshot | None]  # none if the end is not pushed yet (`pushed` false: its store failing)
    pushed: NotRequired[bool]  # everything was pushed before the answer
    stopping: NotRequired[bool]  # true: the daemon's stop cut the end's push short (not its store); pushed once it runs


@with_config(ANSWER)
class SessionList(TypedDict):
    sessions: list[Session]
    next: str | None


@with_config(ANSWER)
class KeptInStore(TypedDict):
    objects: int  # store objects of the session kept for good (never freed by gc)
    why: str  # what needs them: the members slot pins this device's log as a rekey froze it


@with_config(ANSWER)
class LeftInStore(TypedDict):
    store: str  # the store's URL, without credentials
    what: str  # what stays there: its last manifest and the parts objects its nodes name
    why: str  # the store's head of it could not be read (a store down, or slower than rm waits)
    fix: str  # what to do: `sessiond gc` frees the rest it let go


@with_config(ANSWER)
class Deleted(TypedDict):
    deleted: str
    # present when the delete kept objects of this device's logs in the store for good (README: gc)
    kept_in_store: NotRequired[KeptInStore]
    # present when the delete of a session never shared could not read its head in the store (README: gc)
    left_in_store: NotRequired[LeftInStore]


@with_config(QUERY)
class DeleteQuery(TypedDict, total=False):
    # true: delete a shared session even though changes written here wait to be pushed (they are lost), or a
    # revoked one holding writes of this device no other device has; else such a delete is refused (409
    # not_pushed, held_here)
    force: QueryBool


@with_config(QUERY)
class SessionsQuery(TypedDict, total=False):
    user: Name(LIST_EVERY_USER)
    # true: the sessions that have no user, none set or an empty one (which an older sessiond stored, and
    # which `user` cannot name: it refuses an empty one); not with `user`. false is the same as leaving it out
    no_user: QueryBool
    status: Status
    tag: Text(100, min_len=1)
    limit: QueryInt(1, 1000)
    after: Text(128, min_len=1)  # a session id, `next` of the page before


__all__ = [
    "ChatPolicy",
    "CreateBody",
    "Deleted",
    "Ended",
    "PatchBody",
    "Policy",
    "Session",
    "SessionCreate",
    "SessionList",
    "SessionPatch",
    "SessionsQuery",
    "Settings",
    "Snapshot",
]
