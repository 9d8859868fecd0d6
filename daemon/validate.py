"""Checking request bodies and query strings. Every failure is an `Invalid` naming the field.

This is the one contract of what a session may hold: the API, every importer (daemon/formats.py) and
the operations pulled from other devices (remote_log) are checked by these functions. What passes can
be stored and pushed: text is valid Unicode, integers fit DAG-CBOR's 64 bits, floats are finite.
"""
from __future__ import annotations

import json
import math
import time
from itertools import compress
from operator import itemgetter
from typing import Any

from ..storage.db import ROLES, SETTINGS_KEYS, STATUSES
from ..storage.errors import Invalid
from ..storage.ids import check_id
from ..sync.dagcbor import INT_MAX, INT_MIN

MAX_TEXT = 8 << 20  # one message's content, characters
MAX_SHORT = 1000


def obj(value: Any, where: str = "body") -> dict:
    if not isinstance(value, dict):
        raise Invalid(f"{where} must be a JSON object")
    return value


def only(body: dict, allowed: tuple[str, ...], where: str = "body") -> None:
    extra = sorted(set(body) - set(allowed))
    if extra:
        raise Invalid(f"{where}: unknown field(s) {', '.join(map(repr, extra))}; allowed: {', '.join(allowed)}")


def text(s: str, where: str) -> str:
    """`s` if it is valid Unicode text: a lone surrogate ("\\ud800" in JSON) can be neither stored
    as UTF-8 nor pushed."""
    if not s.isascii():
        try:
            s.encode()
        except UnicodeEncodeError as exc:
            raise Invalid(f"{where} is not valid Unicode text: it has a lone surrogate "
                          f"(\\u{ord(s[exc.start]):04x}) at character {exc.start}") from None
    return s


def opt_str(body: dict, key: str, max_len: int = MAX_SHORT, where: str = "") -> str | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise Invalid(f"{where}{key} must be a string")
    if len(v) > max_len:
        raise Invalid(f"{where}{key} is longer than {max_len} characters")
    if "\x00" in v:
        raise Invalid(f"{where}{key} must not contain NUL characters")
    return text(v, where + key)


def req_str(body: dict, key: str, max_len: int = MAX_SHORT, where: str = "") -> str:
    if body.get(key) is None:
        raise Invalid(f"{where}{key} is required")
    return opt_str(body, key, max_len, where)  # type: ignore[return-value]


def number(v: Any, key: str, lo: float | None = None, hi: float | None = None, integer: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
        raise Invalid(f"{key} must be a finite number")
    if integer and not (isinstance(v, int) or float(v).is_integer()):
        raise Invalid(f"{key} must be a whole number")
    if lo is not None and v < lo or hi is not None and v > hi:
        raise Invalid(f"{key} must be between {lo} and {hi}")
    return int(v) if integer else v


SETTING_RANGES = {"temperature": (0, 10, False), "top_k": (1, 1 << 31, True), "top_p": (0, 1, False),
                  "max_tokens": (1, 1 << 31, True)}


def settings(v: Any, where: str = "settings", base: dict | None = None, lenient: bool = False) -> dict:
    """Model settings. With `base` (a PATCH), the fields given replace those of `base` one by one and a
    null removes one; without, nulls are left out. `lenient` (operations from other devices) keeps
    fields a newer sessiond may know, as they are."""
    if v is None:
        return {}
    obj(v, where)
    if not lenient:
        only(v, SETTINGS_KEYS, where)
    out = dict(base or {})
    for k, val in v.items():
        if val is None:
            out.pop(k, None)
        elif k == "provider":
            if not isinstance(val, str) or not 0 < len(val) <= 100 or "\x00" in val:
                raise Invalid(f"{where}.provider must be the name of a provider in config.toml ([providers.NAME])")
            out[k] = val
        elif k in SETTING_RANGES:
            lo, hi, integer = SETTING_RANGES[k]
            out[k] = number(val, f"{where}.{k}", lo, hi, integer)
        else:
            out[k] = json_value(val, f"{where}.{k}")
    return out


def json_value(v: Any, key: str, depth: int = 0) -> Any:
    """Plain JSON that DAG-CBOR can hold (objects with text keys, arrays, valid Unicode text, integers
    of at most 64 bits, finite floats, booleans, null). Errors name the place, e.g. metadata.a[2]."""
    if depth > 32:
        raise Invalid(f"{key} is nested too deeply")
    if isinstance(v, str):
        return text(v, key)
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise Invalid(f"{key} has a key that is not text")
            text(k, f"a key of {key}")
            out[k] = json_value(x, f"{key}.{k:.40}", depth + 1)
        return out
    if isinstance(v, list):
        return [json_value(x, f"{key}[{i}]", depth + 1) for i, x in enumerate(v)]
    if isinstance(v, float):
        if not math.isfinite(v):
            raise Invalid(f"{key} must not contain NaN or Infinity")
    elif isinstance(v, int) and not isinstance(v, bool):
        if not INT_MIN <= v <= INT_MAX:
            raise Invalid(f"{key} is an integer out of the 64-bit range (-2^64 to 2^64-1) that sessions can "
                          f"hold and sync; store it as a string")
    elif v is not None and not isinstance(v, bool):
        raise Invalid(f"{key} holds a {type(v).__name__}, which is not plain JSON")
    return v


def find_lone_surrogate(value: Any, where: str = "body") -> None:
    """Raise Invalid naming the first text (or key) in a parsed JSON document that holds a lone
    surrogate. Iterative: the document may be as deep as the parser allows."""
    stack = [(value, where)]
    while stack:
        v, at = stack.pop()
        if isinstance(v, str):
            text(v, at)
        elif isinstance(v, dict):
            for k, x in v.items():
                text(k, f"a key of {at}")
                stack.append((x, f"{at}.{k:.40}"))
        elif isinstance(v, list):
            stack.extend((x, f"{at}[{i}]") for i, x in enumerate(v))


def opt_obj(body: dict, key: str) -> dict | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise Invalid(f"{key} must be a JSON object")
    return json_value(v, key)


def tags(v: Any) -> list[str]:
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(t, str) and 0 < len(t) <= 100 for t in v):
        raise Invalid("tags must be a list of non-empty strings of at most 100 characters")
    for i, t in enumerate(v):
        text(t, f"tags[{i}]")
    return sorted(set(v))


def message(m: Any, where: str = "message") -> dict:
    obj(m, where)
    only(m, ("role", "content", "tokens", "chat", "name", "tool_call_id", "metadata"), where)
    role = m.get("role")
    if role not in ROLES:
        raise Invalid(f"{where}.role must be one of {', '.join(ROLES)} (got {role!r:.40})")
    content = m.get("content")
    if not isinstance(content, str):
        raise Invalid(f"{where}.content must be a string")
    if len(content) > MAX_TEXT:
        raise Invalid(f"{where}.content is longer than {MAX_TEXT} characters")
    out = {"role": role, "content": text(content, f"{where}.content")}
    if m.get("tokens") is not None:
        out["tokens"] = number(m["tokens"], f"{where}.tokens", 0, 1 << 40, True)
    for k in ("chat", "name", "tool_call_id"):
        if m.get(k) is not None:
            out[k] = req_str(m, k, 200, where + ".")
    if m.get("metadata") is not None:
        out["metadata"] = json_value(obj(m["metadata"], f"{where}.metadata"), f"{where}.metadata")
    return out


_PLAIN_KEYS = ({"role", "content"}, {"role", "content", "tokens"})


def messages(msgs: list) -> list[dict]:
    """A batch: the common shape ({role, content[, tokens]}) is checked inline, anything else by message()."""
    out = []
    for i, m in enumerate(msgs):
        if type(m) is dict and m.keys() in _PLAIN_KEYS and m["role"] in ROLES and type(m["content"]) is str \
                and len(m["content"]) <= MAX_TEXT:
            tok = m.get("tokens")
            if tok is None or (type(tok) is int and 0 <= tok <= 1 << 40):
                out.append(m)
                continue
        out.append(message(m, f"messages[{i}]"))
    return out


def initial_messages(v: Any) -> list[dict]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise Invalid("initial_messages must be a list of {role, content} objects")
    out = []
    for i, m in enumerate(v):
        msg = message(m, f"initial_messages[{i}]")
        msg.pop("chat", None)
        out.append(msg)
    return out


def query_int(query, key: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(key)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise Invalid(f"query parameter {key} must be a whole number") from None
    if not lo <= v <= hi:
        raise Invalid(f"query parameter {key} must be between {lo} and {hi}")
    return v


POLICY_RANGES = {"token_quota": (1, 1 << 50, True), "checkpoint_interval": (1, 1 << 40, True),
                 "idle_timeout": (1, 10 * 365 * 86400, False), "max_context_tokens": (1, 1 << 40, True),
                 "context_margin": (0.05, 1, False)}
POLICY_SHORTCUTS = tuple(POLICY_RANGES) + ("auto_compact",)


def policy(body: dict, base: dict | None = None, chat: bool = False) -> dict | None:
    """Policy fields from body["policy"] and the top-level shortcuts; None if the body names none.
    A null value removes a field."""
    given: dict = {}
    if body.get("policy") is not None:
        obj(body["policy"], "policy")
        given.update(body["policy"])
    for k in POLICY_SHORTCUTS:
        if k in body:
            given[k] = body[k]
    if not given and "policy" not in body:
        return None
    allowed = ("max_context_tokens", "context_margin", "auto_compact") if chat else POLICY_SHORTCUTS
    only(given, allowed, "policy")
    out = dict(base or {})
    for k, val in given.items():
        if val is None:
            out.pop(k, None)
        elif k == "auto_compact":
            if not isinstance(val, bool):
                raise Invalid("auto_compact must be true or false")
            out[k] = val
        else:
            lo, hi, integer = POLICY_RANGES[k]
            out[k] = number(val, k, lo, hi, integer)
    return out


# ------------------------------------------------------------------ whole sessions and chats
SESSION_FIELDS = ("id", "user", "name", "system_prompt", "model", "settings", "initial_messages", "metadata",
                  "tags", "preferences", "expires_at", "expires_in", "policy") + POLICY_SHORTCUTS
CHAT_POLICY = ("max_context_tokens", "context_margin", "auto_compact")


def expiry(body: dict) -> float | None:
    if body.get("expires_at") is not None and body.get("expires_in") is not None:
        raise Invalid("give expires_at or expires_in, not both")
    if body.get("expires_in") is not None:
        return round(time.time() + number(body["expires_in"], "expires_in", 1, 10 * 365 * 86400), 3)
    if body.get("expires_at") is not None:
        return number(body["expires_at"], "expires_at", 0, 1e11)
    return None


def session_spec(body: dict) -> dict:
    """A new session's fields (POST /v1/sessions, and every file importer), checked."""
    only(body, SESSION_FIELDS)
    sid = opt_str(body, "id", 128)
    spec: dict[str, Any] = {
        "id": check_id(sid, "session id") if sid is not None else None,
        "user": opt_str(body, "user", 200),
        "name": opt_str(body, "name"),
        "system_prompt": opt_str(body, "system_prompt", MAX_TEXT),
        "model": opt_str(body, "model", 200),
        "settings": settings(body.get("settings")),
        "initial_messages": initial_messages(body.get("initial_messages")),
        "metadata": opt_obj(body, "metadata") or {},
        "tags": tags(body.get("tags")),
        "preferences": opt_obj(body, "preferences") or {},
    }
    spec["expires_at"] = expiry(body)
    spec["policy"] = policy(body) or {}
    return spec


def _known(p: Any, where: str, keys: tuple[str, ...]) -> dict:
    """Policy fields this sessiond knows, from another device's policy (a newer one may know more)."""
    return {k: x for k, x in obj(p, where).items() if k in keys}


def chat_spec(c: Any, where: str = "chat", lenient: bool = False) -> dict:
    """A chat's fields as a session file or another device names them (id required)."""
    obj(c, where)
    p = c.get("policy")
    if lenient and p is not None:
        p = _known(p, f"{where}.policy", CHAT_POLICY)
    return {"id": check_id(c.get("id"), f"{where}: chat id"), "name": opt_str(c, "name", where=where + "."),
            "system_prompt": opt_str(c, "system_prompt", MAX_TEXT, where + "."),
            "model": opt_str(c, "model", 200, where + "."),
            "settings": settings(c.get("settings"), f"{where}.settings", lenient=lenient),
            "policy": _within(where, lambda: policy({"policy": p}, chat=True)) or {}}


def _within(where: str, check):
    """check(), its Invalid prefixed with the place it is about."""
    try:
        return check()
    except Invalid as exc:
        raise Invalid(f"{where}: {exc.message}") from None


# ------------------------------------------------------------------ operations from other devices
_SESSION_TEXT = {"user": 200, "name": MAX_SHORT, "system_prompt": MAX_TEXT, "model": 200}


def _session_fields(b: dict, where: str) -> None:
    """The session fields an operation carries, checked as the API checks them; fields a newer
    sessiond may write are left alone (applying ignores them)."""
    w = where + ": "
    for k, n in _SESSION_TEXT.items():
        opt_str(b, k, n, w)
    if b.get("settings") is not None:
        settings(b["settings"], w + "settings", lenient=True)
    if b.get("initial_messages") is not None:
        _within(where, lambda: initial_messages(b["initial_messages"]))
    for k in ("metadata", "preferences", "provenance"):
        if b.get(k) is not None:
            obj(b[k], w + k)
    if "tags" in b:
        _within(where, lambda: tags(b["tags"]))
    if b.get("policy") is not None:
        _within(where, lambda: policy({"policy": _known(b["policy"], "policy", POLICY_SHORTCUTS)}))
    if b.get("expires_at") is not None:
        number(b["expires_at"], w + "expires_at", 0, 1e11)
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
            number(body["created_at"], w + "created_at", 0, 1e11)
        chats = body.get("chats") or []
        if not isinstance(chats, list):
            raise Invalid(f"{w}chats must be a list")
        for i, c in enumerate(chats):
            _within(where, lambda: chat_spec(c, f"chats[{i}]", lenient=True))
    elif kind == "session.update":
        _session_fields(body, where)
    elif kind == "chat.create":
        _within(where, lambda: chat_spec(body, lenient=True))
    elif kind == "chat.update":
        check_id(body.get("chat"), w + "chat id")
        for k, n in (("name", MAX_SHORT), ("system_prompt", MAX_TEXT), ("model", 200)):
            opt_str(body, k, n, w)
        if body.get("settings") is not None:
            settings(body["settings"], w + "settings", lenient=True)
        if body.get("policy") is not None:
            _within(where, lambda: policy({"policy": _known(body["policy"], "policy", CHAT_POLICY)}, chat=True))
        cut = body.get("compacted")
        if cut is not None and not (isinstance(cut, list) and len(cut) == 3 and type(cut[0]) is int
                                    and isinstance(cut[1], str) and type(cut[2]) is int):
            raise Invalid(f"{w}compacted must be null or [lamport, device, seq]")
    elif kind == "checkpoint.add":
        for k in ("number", "tokens", "messages"):
            number(body.get(k), w + k, 0, INT_MAX, True)
        number(body.get("created_at"), w + "created_at", 0, 1e11)
        for k in ("hash", "pk", "signature"):
            _hex(body.get(k), w + k)
        for k, x in obj(body.get("frontier"), w + "frontier").items():
            number(x, f"{w}frontier.{k:.40}", 0, INT_MAX, True)


def remote_log(lg) -> None:
    """Another device's operations as pulled (a storage.db.RemoteLog), before anything is applied:
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
    if tokens and (min(tokens) < 0 or max(tokens) > 1 << 40):
        bad = next(r for r in rows if r[7] is not None and not 0 <= r[7] <= 1 << 40)
        raise Invalid(f"message {bad[3]}: tokens must be between 0 and {1 << 40}")
    for r in compress(rows, map(itemgetter(9), rows)):  # the rows with extra fields
        where = f"message {r[3]}"
        extra = json_value(obj(json.loads(r[9]), where), where)
        for k in ("name", "tool_call_id"):
            opt_str(extra, k, 200, where + ": ")
