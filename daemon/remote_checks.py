"""Operations pulled from other devices, checked as the API checks requests (issue 19: nothing a device
would refuse from an app is applied from another device). The daemon hands `remote_log` to the sync
engine (Syncer's check_remote), so that sync/ needs no import of the daemon."""

from __future__ import annotations

import json
from itertools import compress
from operator import itemgetter
from typing import Any

from ..api import chats as chat_models
from ..api import messages as message_models
from ..api import sessions as session_models
from ..api.sessions import CHAT_POLICY, POLICY_SHORTCUTS
from ..api.types import INT_MAX, MAX_TOKENS, ROLES, STATUSES, Number, Whole
from ..storage.errors import Invalid
from ..storage.ids import check_id
from .checker import checker, field_checker
from .toolcalls import by_call_id
from .validate import _known, chat_spec, initial_messages, json_value, obj, settings, stored_field, within

# ------------------------------------------------------------------ operations from other devices
_SESSION_TEXT = ("user", "name", "system_prompt", "model")
_TIME = checker(Number(0, 1e11))
_COUNT = checker(Whole(0, INT_MAX))
_TOOL_CALLS = checker(message_models.StoredToolCalls)  # (not capped: an older sessiond's answers hold more)


def _session_fields(b: dict, where: str) -> None:
    """The session fields an operation carries, checked as the API checks them; fields a newer
    sessiond may write are left alone (applying ignores them)."""
    w = where + ": "
    for k in _SESSION_TEXT:
        stored_field(session_models.SessionCreate, k)(b.get(k), w + k)
    if b.get("settings") is not None:
        settings(b["settings"], w + "settings", lenient=True)
    if b.get("initial_messages") is not None:
        within(where, lambda: initial_messages(b["initial_messages"]))
    for k in ("metadata", "preferences", "provenance"):
        if b.get(k) is not None:
            obj(b[k], w + k)
    if "tags" in b and b["tags"] is not None:
        within(where, lambda: field_checker(session_models.SessionCreate, "tags")(b["tags"], "tags"))
    if b.get("policy") is not None:
        within(where, lambda: checker(session_models.Policy)(_known(b["policy"], "policy", POLICY_SHORTCUTS), "policy"))
    if b.get("expires_at") is not None:
        _TIME(b["expires_at"], w + "expires_at")
    if b.get("current_chat") is not None:
        check_id(b["current_chat"], w + "current_chat")
    if "status" in b and b["status"] not in STATUSES:
        raise Invalid(f"{w}status must be one of {', '.join(STATUSES)} (got {b['status']!r:.40})")


def _hex(v: Any, where: str) -> None:
    try:
        bytes.fromhex(v)
    except (TypeError, ValueError):
        raise Invalid(f"{where} must be hexadecimal text") from None


def remote_op(kind: str, body: Any, where: str) -> None:
    """One operation of another device's log (not a message): refuse what the API would refuse."""
    json_value(obj(body, where), where)
    w = where + ": "
    if kind == "session.create":
        _session_fields(body, where)
        if body.get("created_at") is not None:
            _TIME(body["created_at"], w + "created_at")
        chats = body.get("chats") or []
        if not isinstance(chats, list):
            raise Invalid(f"{w}chats must be a list")
        for i, c in enumerate(chats):
            within(where, lambda c=c, i=i: chat_spec(c, f"chats[{i}]", lenient=True))
    elif kind == "session.update":
        _session_fields(body, where)
    elif kind == "chat.create":
        within(where, lambda: chat_spec(body, lenient=True))
    elif kind == "chat.update":
        check_id(body.get("chat"), w + "chat id")
        for k in ("name", "system_prompt", "model"):
            stored_field(chat_models.ChatCreate, k)(body.get(k), w + k)
        if body.get("settings") is not None:
            settings(body["settings"], w + "settings", lenient=True)
        if body.get("policy") is not None:
            within(
                where,
                lambda: checker(session_models.ChatPolicy)(_known(body["policy"], "policy", CHAT_POLICY), "policy"),
            )
        cut = body.get("compacted")
        if cut is not None and not (
            isinstance(cut, list)
            and len(cut) == 3
            and type(cut[0]) is int
            and isinstance(cut[1], str)
            and type(cut[2]) is int
        ):
            raise Invalid(f"{w}compacted must be null or [lamport, device, seq]")
    elif kind == "checkpoint.add":
        for k in ("number", "tokens", "messages"):
            _COUNT(body.get(k), w + k)
        _TIME(body.get("created_at"), w + "created_at")
        if "v" in body:  # its version (none: 1); one this sessiond does not know is kept, and refused by verify
            _COUNT(body["v"], w + "v")
        for k in ("hash", "pk", "signature"):
            _hex(body.get(k), w + k)
        for k, x in obj(body.get("frontier"), w + "frontier").items():
            _COUNT(x, f"{w}frontier.{k:.40}")


def remote_log(lg) -> None:
    """Another device's operations as pulled (a storage.model.RemoteLog), before anything is applied:
    an Invalid names the first operation that the API would not have accepted. Checked a column at a
    time where it can be: this runs on every pull."""
    for op in lg.ops:
        remote_op(op.kind, op.body, f"operation {op.seq} ({op.kind})")
    rows = lg.messages
    if not rows:
        return
    if not set(map(itemgetter(5), rows)) <= set(ROLES):
        bad = next(r for r in rows if r[5] not in ROLES)
        raise Invalid(f"message {bad[3]}: role {bad[5]!r:.40} is not one of {', '.join(ROLES)}")
    for chat in set(map(itemgetter(1), rows)):
        check_id(chat, "a message's chat id")
    tokens = [t for t in map(itemgetter(7), rows) if t is not None]
    if tokens and (min(tokens) < 0 or max(tokens) > MAX_TOKENS):
        bad = next(r for r in rows if r[7] is not None and not 0 <= r[7] <= MAX_TOKENS)
        raise Invalid(f"message {bad[3]}: tokens must be between 0 and {MAX_TOKENS}")
    name = field_checker(message_models.MessageIn, "name")
    for r in compress(rows, map(itemgetter(9), rows)):  # the rows with extra fields
        where = f"message {r[3]}"
        extra = json_value(obj(json.loads(r[9]), where), where)
        for k in ("name", "tool_call_id"):
            name(extra.get(k), f"{where}: {k}")
        if extra.get("tool_calls") is not None:
            _TOOL_CALLS(extra["tool_calls"], f"{where}: tool_calls")
            if r[5] != "assistant":
                raise Invalid(f"{where}: tool_calls on a message of role {r[5]!r:.40}, not an assistant's")
        if extra.get("call_fields") is not None:  # the calls' provider fields: as an append's (validate.given)
            by_call_id(extra["call_fields"], extra.get("tool_calls"), f"{where}: call_fields")
