"""Checking request bodies and query strings. Every failure is an `Invalid` naming the field."""
from __future__ import annotations

import math
from typing import Any

from sessiond.storage.db import ROLES, SETTINGS_KEYS
from sessiond.storage.errors import Invalid

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
    return v


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


def settings(v: Any, where: str = "settings") -> dict:
    if v is None:
        return {}
    obj(v, where)
    only(v, SETTINGS_KEYS, where)
    out = {}
    ranges = {"temperature": (0, 10, False), "top_k": (1, 1 << 31, True), "top_p": (0, 1, False),
              "max_tokens": (1, 1 << 31, True)}
    for k, val in v.items():
        if val is None:
            continue
        if k == "provider":
            if not isinstance(val, str) or not 0 < len(val) <= 100 or "\x00" in val:
                raise Invalid(f"{where}.provider must be the name of a provider in config.toml ([providers.NAME])")
            out[k] = val
            continue
        lo, hi, integer = ranges[k]
        out[k] = number(val, f"{where}.{k}", lo, hi, integer)
    return out


def json_value(v: Any, key: str, depth: int = 0) -> Any:
    """Plain JSON (objects with string keys, arrays, strings, finite numbers, booleans, null)."""
    if depth > 32:
        raise Invalid(f"{key} is nested too deeply")
    if isinstance(v, dict):
        return {str(k): json_value(x, key, depth + 1) for k, x in v.items()}
    if isinstance(v, list):
        return [json_value(x, key, depth + 1) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        raise Invalid(f"{key} must not contain NaN or Infinity")
    return v


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
    out = {"role": role, "content": content}
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
