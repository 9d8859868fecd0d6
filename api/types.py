"""The field types every request model is made of, each with its check and its JSON Schema in one place.

A check that pydantic cannot express natively is a small function attached with Annotated; it raises
`refuse(...)`, whose message is the tail of a sentence ("must be ...") and whose optional `sub` names a
place inside the field (metadata's `.a[2]`): the daemon prefixes the field's dotted name.
What passes can be stored and pushed: text is valid Unicode (pydantic refuses lone surrogates itself),
integers fit DAG-CBOR's 64 bits, floats are finite, JSON values nest at most 32 levels.
"""

import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

ROLES = ("system", "user", "assistant", "tool")
STATUSES = ("active", "paused", "ended")
MAX_TEXT = 8 << 20  # one message's content, characters
MAX_TOKENS = 1 << 40  # a count of tokens (a message's, a usage's, a quota's, an interval), wherever sessiond takes one
MAX_SHORT = 1000
# a session's metadata, its preferences, its tags: bytes of JSON (UTF-8) each. Every change of one is an operation
# carrying it whole to every device, and every read of the session (show, ls) reads them: a document belongs in a
# message (MAX_TEXT), not here. (Kept beside the session's row since schema 21: an append no longer pays for them.)
MAX_SESSION_JSON = 1 << 20
# how deep JSON nests: a value at most MAX_DEPTH levels below the root of the document that holds it (its root at
# 0: `{"a": [1]}` holds 1 two levels down), as json_value() checks it and every device checks an operation
MAX_DEPTH = 32
# where a session's metadata and preferences lie in the operation that carries them (one level into its body):
# they and what is held to them (an append stream frame's tag) nest at most MAX_DEPTH - FIELD_DEPTH levels below
FIELD_DEPTH = 1
INT_MIN, INT_MAX = -(1 << 64), (1 << 64) - 1  # what DAG-CBOR holds
YEARS_10 = 10 * 365 * 86400
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")  # \Z: "$" also matches before a final newline
_SHARE_CODE = "sessiond1"  # sync/sharecode.py PREFIX (api/ imports no other package of ours)
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"  # the same in JSON Schema (ECMA "$" is the very end)

# Request bodies: unknown fields are refused, and nothing is coerced (no "5" for 5, no 1 for true).
BODY = ConfigDict(extra="forbid", strict=True)
# Answers: documented, not checked at run time; a newer daemon may add fields.
ANSWER = ConfigDict(extra="allow")
# Query strings: every value is text; parameters a route does not read are ignored.
QUERY = ConfigDict(extra="ignore", strict=True)


def refuse(message: str, sub: str = "") -> PydanticCustomError:
    return PydanticCustomError("sessiond", message.replace("{", "{{").replace("}", "}}"), {"sub": sub})


Role = Literal["system", "user", "assistant", "tool"]
Status = Literal["active", "paused", "ended"]


def _no_nul(s: str) -> str:
    if "\x00" in s:
        raise refuse("must not contain NUL characters")
    return s


def Text(max_len: int = MAX_SHORT, *, min_len: int = 0, nul: bool = False) -> Any:
    """Text of at most `max_len` characters; without `nul`, NUL characters are refused."""
    if nul:
        return Annotated[str, Field(min_length=min_len, max_length=max_len)]
    return Annotated[
        str,
        Field(min_length=min_len, max_length=max_len, json_schema_extra={"pattern": "^[^\\u0000]*$"}),
        AfterValidator(_no_nul),
    ]


MAX_NAME = 200  # a model's or a user's name, characters


def Name(instead: str) -> Any:
    """Text that names something (a model, a user) in a request where leaving it out has a meaning of its own
    (the default, no user): an empty one is refused, saying what to do instead (`instead`: "leave it out
    ..."), rather than read as that meaning. What is stored so already (an older sessiond's, a file's,
    another device's) is checked as `Text(MAX_NAME)` (daemon/validate.py's `stored_field`)."""

    def check(s: str) -> str:
        if not s:
            raise refuse(f"must not be empty: {instead}")
        return s

    return Annotated[
        str,
        Field(max_length=MAX_NAME, json_schema_extra={"minLength": 1, "pattern": "^[^\\u0000]*$"}),
        AfterValidator(_no_nul),
        AfterValidator(check),
    ]


def Ident(what: str = "id") -> Any:
    """A caller-chosen id (`what`: "session id", "chat id", named so in errors)."""

    def check(s: str) -> str:
        if len(s) > 128 and s.startswith(_SHARE_CODE):  # (storage/ids.py check_id's refusal, word for word)
            raise PydanticCustomError(
                "sessiond",
                "a share code was given where an id goes (not quoted here: whoever sees a code can read its session);"
                " to take in the session it shares, `sessiond import` with the code on standard input (it keeps the"
                " session's id)",
                {"what": what},
            )
        if not ID_RE.match(s):
            raise PydanticCustomError(
                "sessiond",
                "must be 1-128 characters of letters, digits, '.', '_' or '-', "
                "starting with a letter or digit (got {got})",
                # (what is longer than an id is quoted nowhere: it may be a secret given where an id goes)
                {"what": what, "got": f"{len(s)} characters" if len(s) > 128 else f"{s!r:.80}"},
            )
        return s

    return Annotated[str, AfterValidator(check), Field(json_schema_extra={"pattern": ID_PATTERN, "maxLength": 128})]


Id = Ident()
SessionId = Ident("session id")
ChatId = Ident("chat id")


def _range_message(lo, hi) -> str:
    return f"must be between {lo} and {hi}"


def _numeric_text(v: str) -> bool:
    try:
        return math.isfinite(float(v))
    except ValueError:
        return False


def Number(lo: float, hi: float, *, integer: bool = False, unit: str = "") -> Any:
    """A finite JSON number within [lo, hi], kept as given (an int stays an int); with `integer`, a whole
    number (1.0 is 1). `unit`: what it counts, said in its refusals ("seconds ..."; Seconds)."""
    of = f" of {unit}" if unit else ""

    def check(v: Any) -> Any:
        if isinstance(v, bool):
            raise refuse(f"must be a number{of}, not a boolean ({str(v).lower()})")
        if isinstance(v, str):
            hint = "write it without quotes" if _numeric_text(v) else "give a JSON number"
            raise refuse(f"must be a number{of}, not text ({v!r:.40}: {hint})")
        if not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
            raise refuse("must be a finite number" + of)
        if integer and not (isinstance(v, int) or v.is_integer()):
            raise refuse("must be a whole number" + of)
        if v < lo or v > hi:
            raise refuse(_range_message(lo, hi) + (f" {unit}" if unit else ""))
        return int(v) if integer else v

    schema = {"type": "integer" if integer else "number", "minimum": lo, "maximum": hi}
    return Annotated[int if integer else float, PlainValidator(check), WithJsonSchema(schema)]


SECONDS = "seconds (an hour is 3600, a day 86400)"


def Seconds(lo: float, hi: float) -> Any:
    """A duration: a Number of seconds, which its refusals say ("30d", as the CLI writes one, is not one)."""
    return Number(lo, hi, unit=SECONDS)


def Whole(lo: int, hi: int) -> Any:
    return Number(lo, hi, integer=True)


def _past_max(depth: int) -> bool:
    """Whether a value `depth` levels below its document's root is nested too deeply (MAX_DEPTH)."""
    return depth > MAX_DEPTH


def nested_too_deeply(v: Any, depth: int = 0) -> bool:
    """Whether json_value(v, depth=depth) would refuse JSON `v` for its depth, walked without recursion (a value
    read from a text nesting hundreds of levels)."""
    level: list[Any] = [v]
    while level:
        if _past_max(depth):
            return True
        level = [x for y in level for x in (y.values() if isinstance(y, dict) else y if isinstance(y, list) else ())]
        depth += 1
    return False


def json_value(v: Any, sub: str = "", depth: int = 0) -> Any:
    """`v` if it is plain JSON that DAG-CBOR can hold (objects with text keys, arrays, valid Unicode text,
    integers of at most 64 bits, finite floats, booleans, null), else refuse(), naming the place."""
    if _past_max(depth):
        raise refuse("is nested too deeply", sub)
    if isinstance(v, str):
        lone_surrogate(v, sub)
        return v
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise refuse("has a key that is not text", sub)
            lone_surrogate(k, sub, "has a key that is not valid Unicode text: it has")
            out[k] = json_value(x, f"{sub}.{k:.40}", depth + 1)
        return out
    if isinstance(v, list):
        return [json_value(x, f"{sub}[{i}]", depth + 1) for i, x in enumerate(v)]
    if isinstance(v, float):
        if not math.isfinite(v):
            raise refuse("must not contain NaN or Infinity", sub)
        # Beyond 2^64 every float is a whole number, and JSON (and the API's schema, JsonValue) counts a
        # whole number as an integer, whatever its spelling: 1e86 is an integer out of range there too.
        if not INT_MIN <= v <= INT_MAX:
            raise refuse(
                "is a number out of the 64-bit range (-2^64 to 2^64) that sessions can hold; store it as a string",
                sub,
            )
    elif isinstance(v, int) and not isinstance(v, bool):
        if not INT_MIN <= v <= INT_MAX:
            raise refuse(
                "is an integer out of the 64-bit range (-2^64 to 2^64-1) that sessions can hold and "
                "sync; store it as a string",
                sub,
            )
    elif v is not None and not isinstance(v, bool):
        raise refuse(f"holds a {type(v).__name__}, which is not plain JSON", sub)
    return v


def lone_surrogate(s: str, sub: str = "", what: str = "is not valid Unicode text: it has") -> None:
    """Refuse text holding a lone surrogate ("\\ud800" in JSON): it can be neither stored as UTF-8 nor pushed."""
    if not s.isascii():
        try:
            s.encode()
        except UnicodeEncodeError as exc:
            raise refuse(
                f"{what} a lone surrogate (\\u{ord(s[exc.start]):04x}) at character {exc.start}", sub
            ) from None


def _json_object(v: Any) -> dict:
    if not isinstance(v, dict):
        raise refuse("must be a JSON object")
    return json_value(v)


# The JSON Schema of what json_value() lets through (but the depth), as the component "JsonValue".
JSON_VALUE_REF = {"$ref": "#/components/schemas/JsonValue"}
JSON_VALUE_SCHEMA = {
    "anyOf": [
        {"type": ["null", "boolean", "string"]},
        {"type": "integer", "minimum": INT_MIN, "maximum": INT_MAX},
        {"type": "number", "not": {"type": "integer"}},
        {"type": "array", "items": JSON_VALUE_REF},
        {"type": "object", "additionalProperties": JSON_VALUE_REF},
    ]
}
JsonObject = Annotated[
    dict[str, Any],
    PlainValidator(_json_object),
    WithJsonSchema({"type": "object", "additionalProperties": JSON_VALUE_REF}),
]


def _json_object_at(depth: int) -> Any:
    def check(v: Any) -> dict:
        if not isinstance(v, dict):
            raise refuse("must be a JSON object")
        return json_value(v, "", depth)

    return check


# A JSON object a message keeps in its stored fields (its `extra`), which another device checks as one document
# MAX_DEPTH deep from its root: `metadata` one level into it, a call's provider fields two (call_fields, the
# call's id). Checked from there, so that the API takes no object that no other device would take.
MessageMetadata = Annotated[
    dict[str, Any],
    PlainValidator(_json_object_at(1)),
    WithJsonSchema({"type": "object", "additionalProperties": JSON_VALUE_REF}),
]
CallFieldsObject = Annotated[
    dict[str, Any],
    PlainValidator(_json_object_at(2)),
    WithJsonSchema({"type": "object", "additionalProperties": JSON_VALUE_REF}),
]


def _tag_set(v: list[str]) -> list[str]:
    return sorted(set(v))


_Tag = Text(100, min_len=1)
Tags = Annotated[list[_Tag], AfterValidator(_tag_set)]


def QueryInt(lo: int, hi: int) -> Any:
    """A whole number given as query-string text."""

    def check(raw: Any) -> int:
        # ASCII digits only: int() also takes whitespace around them (a NEL, U+0085, too), other scripts'
        # digits and underscores, none of which a query's number is
        if isinstance(raw, int) and not isinstance(raw, bool):
            v = raw
        elif isinstance(raw, str) and re.fullmatch(r"-?[0-9]+", raw):
            v = int(raw)
        else:
            raise refuse("must be a whole number")
        if not lo <= v <= hi:
            raise refuse(_range_message(lo, hi))
        return v

    return Annotated[int, PlainValidator(check), WithJsonSchema({"type": "integer", "minimum": lo, "maximum": hi})]


# A yes/no query parameter: true or 1 is yes, false or 0 is no; anything else is refused (daemon/validate.py
# checks these first, and answers 400 naming the parameter and these values).
QUERY_BOOLS = {"true": True, "1": True, "false": False, "0": False}


def _query_bool(raw: Any) -> bool:
    if isinstance(raw, str) and raw in QUERY_BOOLS:
        return QUERY_BOOLS[raw]
    raise refuse("must be true, false, 1 or 0")


QueryBool = Annotated[
    bool,
    PlainValidator(_query_bool),
    WithJsonSchema({"type": "string", "enum": list(QUERY_BOOLS)}),
]
