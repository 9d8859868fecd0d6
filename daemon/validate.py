"""Checking what comes in against the API's models (api/): request bodies, query strings, every importer
(daemon/formats.py) and the operations pulled from other devices (remote_log). Every failure is an
`Invalid` (422) naming the field the way the API always has: `metadata.a[2]`, `messages[3].role`.

The models hold the checks (types, lengths, ranges, ids, DAG-CBOR limits); daemon/checker.py turns
pydantic's errors into those messages; this module holds the daemon's side of the contract: defaults,
expiry from expires_in, and the per-field merge of settings and policy in a PATCH (a null removes a field).
What passes can be stored and pushed: text is valid Unicode, integers fit DAG-CBOR's 64 bits, floats
are finite.
"""

from __future__ import annotations

import json
import re
import time
from functools import cache
from typing import Any, get_type_hints

from pydantic import ValidationError

from ..api import chats as chat_models
from ..api import messages as message_models
from ..api import sessions as session_models
from ..api.sessions import CHAT_POLICY, POLICY_RANGES, POLICY_SHORTCUTS, SETTING_RANGES  # noqa: F401 (re-exported)
from ..api.types import (  # noqa: F401
    FIELD_DEPTH,
    INT_MAX,
    MAX_NAME,
    MAX_SESSION_JSON,
    MAX_SHORT,
    MAX_TEXT,
    QUERY_BOOLS,
    ROLES,
    STATUSES,
    Id,
    Number,
    QueryBool,
    Text,
    Whole,
    lone_surrogate,
)
from ..api.types import json_value as _json_value
from ..storage import model as _db
from ..storage.clock import wall
from ..storage.errors import Invalid
from ..storage.ids import check_id
from ..sync import dagcbor
from .checker import Checker, checker, field_checker
from .toolcalls import by_call_id

# The contract (api/) and the storage it feeds agree on these; say so at start-up rather than drift.
assert ROLES == _db.ROLES and STATUSES == _db.STATUSES and (*SETTING_RANGES, "provider") == _db.SETTINGS_KEYS
assert INT_MAX == dagcbor.INT_MAX


# ------------------------------------------------------------------------------------- small pieces
def obj(value: Any, where: str = "body") -> dict:
    if not isinstance(value, dict):
        raise Invalid(f"{where} must be a JSON object")
    return value


def json_value(v: Any, key: str, depth: int = 0) -> Any:
    """Plain JSON that DAG-CBOR can hold, nested at most as deep as a document holding it `depth` levels in
    may be; errors name the place, e.g. metadata.a[2]."""
    try:
        return _json_value(v, "", depth)
    except Exception as exc:  # the PydanticCustomError of api.types
        ctx = getattr(exc, "context", None) or {}
        raise Invalid(f"{key}{ctx.get('sub', '')} {exc}") from None


def find_lone_surrogate(value: Any, where: str = "body") -> None:
    """Raise Invalid naming the first text (or key) in a parsed JSON document that holds a lone
    surrogate. Iterative: the document may be as deep as the parser allows."""
    stack = [(value, where)]
    while stack:
        v, at = stack.pop()
        if isinstance(v, str):
            json_value(v, at)
        elif isinstance(v, dict):
            for k, x in v.items():
                json_value(k, f"a key of {at}")
                stack.append((x, f"{at}.{k:.40}"))
        elif isinstance(v, list):
            stack.extend((x, f"{at}[{i}]") for i, x in enumerate(v))


def within(where: str, check):
    """check(), its Invalid prefixed with the place it is about."""
    try:
        return check()
    except Invalid as exc:
        raise Invalid(f"{where}: {exc.message}") from None


_within = within  # the name importers used


def _given(d: dict) -> dict:
    """The fields of a checked object that are not null."""
    return {k: x for k, x in d.items() if x is not None}


def prompt(text: str | None) -> str | None:
    """A system prompt as stored: an empty one is none (null), however it was given (a chat's empty prompt
    was read as none already: the session's applies)."""
    return text or None


def merged(given: dict, base: dict | None = None) -> dict:
    """`base` with the fields given replacing its own one by one; a null removes one."""
    out = dict(base or {})
    for k, x in given.items():
        if x is None:
            out.pop(k, None)
        else:
            out[k] = x
    return out


def expiry(body: dict) -> float | None:
    """A checked body's expiry time: expires_in counts from now."""
    if body.get("expires_in") is not None:
        return round(wall() + body["expires_in"], 3)
    return body.get("expires_at")


def refuse_past_expiry(body: dict) -> None:
    """A request's expires_at that is already past is refused (422): the session would be made (or left)
    active only to refuse its first write as expired, or be ended a second later. Only the API's own
    requests: a session file imported, or another device's change, keeps the expiry it has."""
    at = body.get("expires_at")
    if at is not None and at <= wall():
        passed = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
        raise Invalid(
            f"expires_at {at} ({passed}) is past: give a time to come (or expires_in, seconds from now); to end a"
            " session now, end it (POST /v1/sessions/{id}/end, `sessiond end ID`)"
        )


def policy(body: dict, base: dict | None = None) -> dict | None:
    """A checked body's policy fields, from body["policy"] and the top-level shortcuts, merged into `base`;
    None if the body names none."""
    given = dict(body.get("policy") or {})
    for k in POLICY_SHORTCUTS:
        if k in body:
            if k in given:  # which one is meant cannot be told
                raise Invalid(f"{k} is given twice, in policy and at the top level: give it once")
            given[k] = body[k]
    if not given and "policy" not in body:
        return None
    return merged(given, base)


# ----------------------------------------------------------------------------------------- messages
_MESSAGE = checker(message_models.MessageIn)
_BATCH = checker(message_models.MessageBatch)
_IDEMPOTENCY_KEY = checker(message_models.IdempotencyKey)


def message(m: Any, where: str = "message") -> dict:
    """One message, checked; null fields left out."""
    out = _MESSAGE(m, where)
    out = _given(out) if None in out.values() else out
    if "tool_calls" in out:
        _calls_of_assistant(out, where)
    return out


def message_name(name: Any, where: str) -> str:
    """A message's `name` (not None) checked as an append's (MessageIn: text of at most MAX_NAME characters, no
    NUL), for the OpenAI endpoint: what the API refuses, it refuses too, naming the field (`where`) as param."""
    try:
        return field_checker(message_models.MessageIn, "name")(name, where)
    except Invalid as exc:
        raise Invalid(exc.message, param=where) from None


_STORED_CALLS = checker(message_models.StoredToolCalls)


def recorded_message(m: dict, where: str) -> dict:
    """A message as a session file records it (an export's, read back by import-file), checked as an append's
    (`message`) but for its tool_calls, uncapped as a pull reads them (remote_checks): an older sessiond
    recorded a model's answer of more than MAX_TOOL_CALLS, which caps only what an app or a model adds now."""
    calls = m.get("tool_calls")
    if not (isinstance(calls, list) and len(calls) > message_models.MAX_TOOL_CALLS):
        return message(m, where)
    out = message({k: x for k, x in m.items() if k != "tool_calls"}, where)
    out["tool_calls"] = _STORED_CALLS(calls, f"{where}.tool_calls")
    _calls_of_assistant(out, where)
    return out


def given(msgs: list[dict], where: str | None = "messages") -> list[dict]:
    """Checked messages with their null fields left out (in place: the hot path), and what their types do
    not say refused; `where`: the list's name (None: a single message, the body itself)."""
    for i, m in enumerate(msgs):
        if None in m.values():
            msgs[i] = m = _given(m)
        if "tool_calls" in m:
            _calls_of_assistant(m, f"{where}[{i}]" if where else None)
        if "call_fields" in m:
            _call_fields(m, f"{where}[{i}].call_fields" if where else "call_fields")
    return msgs


def _call_fields(m: dict, where: str) -> None:
    """A message's `call_fields` checked as a session file's are (toolcalls.by_call_id), in place; none kept
    when it names no call (`{}`)."""
    if own := by_call_id(m["call_fields"], m.get("tool_calls"), where):
        m["call_fields"] = own
    else:
        del m["call_fields"]


def _calls_of_assistant(m: dict, where: str | None) -> None:
    if m["role"] != "assistant":
        raise Invalid(
            f"{where + '.' if where else ''}tool_calls: only an assistant's message carries tool calls"
            f" (this one's role is {m['role']}); a tool's answer names its call with tool_call_id"
        )


def messages(msgs: list) -> list[dict]:
    """A batch's messages, checked (one TypeAdapter call for the whole batch)."""
    return given(_BATCH({"messages": msgs})["messages"])


@cache
def keys_spelled(model: Any) -> re.Pattern[bytes]:
    """What tells, without a second parse, that a body validate.from_json read as `model` gave each key once
    (routes/common.body_as): each of the model's keys written plainly (b'"role"'), and any JSON escape of a
    character from "@" to DEL (which holds every letter and "_": "r\\u006fle" spells "role" too). Found as
    many times in the body as the parsed object has keys, and no field of it holding an object (whose
    keys this does not see), every key was given once: in valid JSON the bytes of a plainly quoted key
    are a whole string, or end one holding an escaped quote (found too: then the full check decides)."""
    keys = b"|".join(re.escape(k.encode()) for k in get_type_hints(model))
    return re.compile(rb'"(?:' + keys + rb')"|\\u00[4-7]')


def from_json(model: Any, raw: bytes) -> Any | None:
    """`raw` parsed and checked against `model` in one call (pydantic's validate_json: no Python objects
    built for json.loads first), or None when that fails for any reason: the caller then goes the usual way
    (json.loads, then the route's check), which gives every refusal its usual answer, 400 or 422 and its
    message. Only for models that read the same from JSON as from Python (MessageIn: text, numbers through
    their own checks, literal roles)."""
    try:
        return checker(model).adapter.validate_json(raw)
    except (ValueError, RecursionError):  # (ValidationError is a ValueError)
        return None


def initial_messages(v: Any) -> list[dict]:
    out = [] if v is None else field_checker(session_models.SessionCreate, "initial_messages")(v, "initial_messages")
    return given([{k: x for k, x in m.items() if k != "chat"} for m in out or ()], "initial_messages")


_PLAIN_KEY = re.compile(r"[ -~]{1,255}")  # what api.messages._key accepts, checked without pydantic's call


def idempotency_key(value: str | None) -> str | None:
    """The request's Idempotency-Key header: 1-255 printable ASCII characters, or absent."""
    if value is None:
        return None
    if _PLAIN_KEY.fullmatch(value):  # the hot path: a good key; a bad one gets the model's own message
        return value
    try:
        return _IDEMPOTENCY_KEY.validate(value)
    except ValidationError as exc:
        raise Invalid(exc.errors(include_url=False)[0]["msg"]) from None


# -------------------------------------------------------------------------------- sessions and chats
_SESSION_CREATE = checker(session_models.CreateBody)

# The names a request may not give empty (api/types.py's Name), which an older sessiond stored so: in what
# a file or another device holds, an empty one is kept as it is, checked as the text it is.
STORED_NAMES = ("user", "model")
_STORED_NAME = Checker(Text(MAX_NAME) | None)


def stored_field(model: Any, name: str) -> Checker:
    """The check of a field of `model` as a file or another device holds it (field_checker's, but an empty
    user or model is taken)."""
    return _STORED_NAME if name in STORED_NAMES else field_checker(model, name)


def session_spec(body: Any) -> dict:
    """A new session's fields from a file (every file importer), checked as POST /v1/sessions checks them,
    with defaults; an empty user or model (an older sessiond's export) is kept as it is."""
    kept = {k: "" for k in STORED_NAMES if isinstance(body, dict) and body.get(k) == ""}
    if kept:
        body = {k: x for k, x in body.items() if k not in kept}
    return {**new_session(_SESSION_CREATE(body)), **kept}


# A session's fields of JSON its operations carry (session.create, session.update) one level into their body,
# which another device checks as one document (remote_checks.remote_op): an initial message's metadata is
# three levels in, its calls' fields four.
OP_JSON_FIELDS = ("metadata", "preferences", "initial_messages")


def as_in_op(fields: dict) -> dict:
    """`fields` (a session's, checked), refused (Invalid) if one of OP_JSON_FIELDS is nested deeper than its
    operation's body may hold it: the API takes nothing that another device would refuse the session's log for;
    or if its metadata, preferences or tags are larger than MAX_SESSION_JSON (within_row)."""
    for k in OP_JSON_FIELDS:
        if fields.get(k):
            json_value(fields[k], k, FIELD_DEPTH)
    for k in ROW_JSON_FIELDS:
        if fields.get(k):
            within_row(fields[k], k)
    return fields


# A session's fields of JSON held to MAX_SESSION_JSON each (within_row): not its initial messages, which hold
# messages of up to MAX_TEXT characters as an append does
ROW_JSON_FIELDS = ("metadata", "preferences", "tags")


def within_row(value: dict | list, field: str) -> None:
    """A session's metadata, preferences or tags, refused (Invalid) past MAX_SESSION_JSON bytes as JSON: every change
    of one is an operation carrying it whole to every device, and every read of the session reads them (they were
    in the session's row, which every append rewrote, before schema 21: 20 MB of metadata made each append ~90 ms).
    Only what this device is given: another device's log, an older sessiond's session, is read whatever it holds."""
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_SESSION_JSON:
        raise Invalid(
            f"{field} is {size:,} bytes as JSON, more than the {MAX_SESSION_JSON >> 20} MiB a session's {field} may"
            f" hold (each change of it is an operation carrying it whole to every device): "
            + (
                "keep fewer tags"
                if field == "tags"
                else f"keep it small, and put a document in a message (up to {MAX_TEXT:,} characters) or in a file"
                f" of your own that {field} names"
            ),
            field=field,
            limit=MAX_SESSION_JSON,
            size=size,
        )


def new_session(b: dict) -> dict:
    """A new session's fields from a checked SessionCreate body, with defaults."""
    as_in_op(b)  # (as its session.create operation will carry them)
    return {
        "id": b.get("id"),
        "user": b.get("user"),
        "name": b.get("name"),
        "system_prompt": prompt(b.get("system_prompt")),
        "model": b.get("model"),
        "settings": _given(b.get("settings") or {}),
        "initial_messages": initial_messages(b.get("initial_messages")),
        "metadata": b.get("metadata") or {},
        "tags": b.get("tags") or [],
        "preferences": b.get("preferences") or {},
        "expires_at": expiry(b),
        "policy": _given(policy(b) or {}),
    }


def session_patch(b: dict, current: dict) -> dict:
    """A checked PATCH body's changes to the session `current`: fields given replace its own; null
    clears one; settings and policy are merged per field (a null settings clears them all)."""
    fields: dict[str, Any] = {k: b[k] for k in ("name", "user", "model") if k in b}
    if "system_prompt" in b:
        fields["system_prompt"] = prompt(b["system_prompt"])
    for k in ("metadata", "preferences"):
        if k in b:
            fields[k] = b[k] or {}
    if "tags" in b:
        fields["tags"] = b["tags"] or []
    if "initial_messages" in b:
        fields["initial_messages"] = initial_messages(b["initial_messages"])
    if "expires_at" in b or "expires_in" in b:
        fields["expires_at"] = expiry(b)
    if "settings" in b:
        fields["settings"] = merged(b["settings"], current["settings"]) if b["settings"] is not None else {}
    pol = policy(b, {} if "policy" in b and b["policy"] is None else current["policy"])  # a null policy: all cleared
    if pol is not None:
        fields["policy"] = pol
    return as_in_op(fields)


def new_chat(b: dict) -> dict:
    """POST /v1/sessions/{id}/chats: the new chat's fields from a checked ChatCreate body."""
    return {
        "id": b.get("id"),
        "name": b.get("name"),
        "system_prompt": prompt(b.get("system_prompt")),
        "model": b.get("model"),
        "settings": _given(b.get("settings") or {}),
        "switch": bool(b.get("switch")),
        "policy": _given(policy(b) or {}),
    }


def chat_patch(b: dict, current: dict) -> dict:
    """A checked chat PATCH body's changes to the chat `current` (its fields as stored), as a chat.update
    carries them: fields given replace its own, null clears one (a null or empty name: the chat's id again);
    settings and policy are merged per field (a null settings or policy clears all of it)."""
    fields: dict[str, Any] = {k: b[k] for k in ("model",) if k in b}
    if "system_prompt" in b:
        fields["system_prompt"] = prompt(b["system_prompt"])
    if "name" in b:  # (an empty name is none, as at the chat's making: its id)
        fields["name"] = b["name"] or current["id"]
    if "settings" in b:
        fields["settings"] = merged(b["settings"], current["settings"]) if b["settings"] is not None else {}
    pol = policy(b, {} if "policy" in b and b["policy"] is None else current["policy"])
    if pol is not None:
        fields["policy"] = pol
    return fields


def settings(v: Any, where: str = "settings", lenient: bool = False) -> dict:
    """Model settings as a file or another device holds them (nulls left out); `lenient` (operations
    from other devices) keeps fields a newer sessiond may know, as they are."""
    if v is None:
        return {}
    obj(v, where)
    if not lenient:
        return _given(checker(session_models.Settings)(v, where))
    return {
        k: (
            field_checker(session_models.Settings, k)(x, f"{where}.{k}")
            if k in _db.SETTINGS_KEYS
            else json_value(x, f"{where}.{k}")
        )
        for k, x in v.items()
        if x is not None
    }


def _known(p: Any, where: str, keys: tuple[str, ...]) -> dict:
    """Policy fields this sessiond knows, from another device's policy (a newer one may know more)."""
    return {k: x for k, x in obj(p, where).items() if k in keys}


def chat_spec(c: Any, where: str = "chat", lenient: bool = False) -> dict:
    """A chat's fields as a session file or another device names them (id required)."""
    obj(c, where)
    p = c.get("policy")
    if lenient and p is not None:
        p = _known(p, f"{where}.policy", CHAT_POLICY)
    pol = within(where, lambda: checker(session_models.ChatPolicy)(p, "policy")) if p is not None else {}
    text = (
        field_checker(chat_models.ChatCreate, "name"),
        field_checker(chat_models.ChatCreate, "system_prompt"),
        stored_field(chat_models.ChatCreate, "model"),
    )
    return {
        "id": check_id(c.get("id"), f"{where}: chat id"),
        "name": text[0](c.get("name"), f"{where}.name"),
        "system_prompt": text[1](c.get("system_prompt"), f"{where}.system_prompt"),
        "model": text[2](c.get("model"), f"{where}.model"),
        "settings": settings(c.get("settings"), f"{where}.settings", lenient=lenient),
        "policy": _given(pol or {}),
    }
