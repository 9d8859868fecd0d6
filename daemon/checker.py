"""pydantic's errors as the API's messages: one `Checker` per model (its TypeAdapter built once), whose
every failure is an `Invalid` (422) naming the field the way the API always has (`metadata.a[2]`,
`messages[3].role`, "unknown field(s) 'x'; allowed: ..."). daemon/validate.py builds the API's checks
on it."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from pydantic import TypeAdapter, ValidationError
from typing_extensions import is_typeddict

from ..api.types import MAX_TEXT, lone_surrogate
from ..storage.errors import Invalid


def place(loc: tuple) -> str:
    """pydantic's loc as the API names fields: ('metadata', 'a', 2) -> metadata.a[2]."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _join(where: str, field: str) -> str:
    if not where or where.endswith(" "):
        return where + field
    return f"{where}.{field}" if field and not field.startswith("[") else where + field


def _allowed(schema: dict, loc: tuple) -> list[str] | None:
    """The fields the object at `loc` of a JSON Schema allows, for an 'unknown field' message."""
    defs = schema.get("$defs", {})
    node = schema
    for part in (*loc, None):
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[1]]
        options = [defs[o["$ref"].rsplit("/", 1)[1]] if "$ref" in o else o for o in node.get("anyOf") or [node]]
        if part is None:
            props = [k for o in options for k in (o.get("properties") or {})]
            return props or None
        nxt = None
        for o in options:
            while "$ref" in o:
                o = defs[o["$ref"].rsplit("/", 1)[1]]
            if isinstance(part, int) and "items" in o:
                nxt = o["items"]
            elif isinstance(part, str) and part in (o.get("properties") or {}):
                nxt = o["properties"][part]
            if nxt is not None:
                break
        if nxt is None:
            return None
        node = nxt
    return None


# pydantic's error types whose message is the field's name and a fixed tail ({...}: from the error's ctx)
_TAILS = {
    "missing": "is required",
    "string_type": "must be a string",
    "string_too_long": "is longer than {max_length} characters",
    "string_too_short": "must be at least {min_length} characters",
    "bool_type": "must be true or false",
    **dict.fromkeys(("dict_type", "model_type", "typed_dict_type", "model_attributes_type"), "must be a JSON object"),
    "list_type": "must be a list",
    "too_short": "must not be empty",
    "too_long": "has more than {max_length} items; split it",
}


class _Ctx(dict):
    def __missing__(self, key: str) -> None:  # as ctx.get(key) read it
        return None


def describe(err: Mapping[str, Any], where: str = "", schema: dict | None = None) -> str:
    """One pydantic error as a sentence naming the field."""
    loc, kind, ctx = err["loc"], err["type"], err.get("ctx") or {}
    field = _join(where, place(loc) + ctx.get("sub", "")) or "body"
    if ctx.get("what"):  # an id names what it is: "session id", "chat id"
        field = _join(where, place(loc[:-1]) + (" " if loc[:-1] else "") + ctx["what"])
    value: Any = err.get("input")  # any JSON value
    if kind == "sessiond":  # a sentence's tail, or a whole sentence about the whole body
        return f"{field} {err['msg']}" if loc or where or ctx.get("sub") else err["msg"]
    if kind == "extra_forbidden":
        parent = _join(where, place(loc[:-1])) or "body"
        allowed = _allowed(schema, loc[:-1]) if schema else None
        return f"{parent}: unknown field(s) {loc[-1]!r}" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    if kind == "literal_error":
        return f"{field} must be one of {ctx.get('expected', '').replace(chr(39), '')} (got {value!r:.40})"
    if kind == "string_unicode":
        try:
            lone_surrogate(value)
        except Exception as exc:
            return f"{field} {exc}"
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return f"{field} must not be empty"
    if kind == "string_too_long" and isinstance(value, str) and isinstance(ctx.get("max_length"), int):
        return too_long(field, len(value), ctx["max_length"])
    tail = _TAILS.get(kind)
    if tail is not None:
        return f"{field} " + tail.format_map(_Ctx(ctx))
    return f"{field}: {err['msg']}"


def too_long(field: str, size: int, limit: int) -> str:
    """A text over its limit, said with its length, the limit and what to do: a document pasted into a message
    (or a prompt) over MAX_TEXT goes in several messages."""
    said = f"{field} is {size:,} characters, longer than the {limit:,} it may hold"
    name = field.rpartition(".")[2]
    if limit == MAX_TEXT and name == "content":
        return f"{said}: split it into several messages, each up to {limit:,} characters"
    if limit == MAX_TEXT and name == "system_prompt":
        return f"{said}: give the rest of it as the chat's first message"
    return said


def invalid(exc: ValidationError, where: str = "", schema: dict | None = None) -> Invalid:
    return Invalid(describe(exc.errors(include_url=False)[0], where, schema))


def _union_members(model: Any) -> list | None:
    """The object models of a named union (api.messages.Append), else None."""
    value = getattr(model, "__value__", None)
    if value is None or get_origin(value) not in (Union, UnionType):  # Union[A, B] or A | B
        return None
    members = get_args(value)
    return list(members) if all(is_typeddict(m) for m in members) else None


class Checker:
    """One model's check, its TypeAdapter built once. A named union of objects is checked as the member
    whose required fields the body has (a body with `messages` is a batch), so that errors are about
    the request meant, not about every alternative."""

    def __init__(self, model: Any):
        self.model = model
        members = _union_members(model)
        self.members = [(frozenset(m.__required_keys__), Checker(m)) for m in members] if members else None
        self.adapter = TypeAdapter(model)
        self.validate = self.adapter.validate_python
        self._schema: dict | None = None

    def __call__(self, value: Any, where: str = "") -> Any:
        if self.members:
            if not isinstance(value, dict):
                return self.members[0][1](value, where)
            keys = value.keys()
            chosen = next((c for req, c in self.members if req <= keys), None) or next(
                (c for req, c in self.members if req & keys), self.members[0][1]
            )
            return chosen(value, where)
        try:
            return self.validate(value)
        except ValidationError as exc:
            if self._schema is None:
                try:
                    self._schema = self.adapter.json_schema()
                except Exception:
                    self._schema = {}
            raise invalid(exc, where, self._schema) from None


@cache
def checker(model: Any) -> Checker:
    return Checker(model)


@cache
def field_checker(model: Any, name: str) -> Checker:
    """The check of one field of a model, on its own."""
    return Checker(get_type_hints(model, include_extras=True)[name])
