"""What every handler uses: reading the request (its body and query checked against the route's own
models from the route table), the daemon, and JSON answers."""

import asyncio
import json
import re
from typing import Any

from aiohttp import web

from ...api.jsonkeys import DuplicateKey, loads
from ...storage.errors import BadBody, BodyTimeout, Invalid, UnsupportedMediaType
from .. import validate as v
from ..appkeys import DAEMON_KEY, ROUTE_KEY
from ..querystring import query as checked_query
from ..unread import idle_of

# One encoder for every answer: json.dumps with a non-default argument builds a new JSONEncoder per call.
_encode = json.JSONEncoder(ensure_ascii=False).encode


def user_filter(q: dict) -> tuple[str | None, bool]:
    """A checked query's `user` and `no_user` (GET /v1/sessions, /v1/stats, /v1/search): both at once is a
    422, as which is meant cannot be told."""
    no_user = q.get("no_user", False)
    if no_user and "user" in q:
        raise Invalid("give user (that user's sessions) or no_user=true (the sessions with none), not both")
    return q.get("user"), no_user


def ok(data: Any, status: int = 200) -> web.Response:
    """A JSON answer (UTF-8, not ASCII-escaped), as web.json_response would make it, built directly."""
    return web.Response(body=_encode(data).encode(), status=status, content_type="application/json", charset="utf-8")


def daemon_of(request: web.Request):
    return request.app[DAEMON_KEY]


# A JSON escape of a UTF-16 surrogate: in a pair it is one character, alone it is not text at all.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _bad_json(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=json.dumps({"error": {"code": "bad_json", "message": message}}), content_type="application/json"
    )


# The Content-Type headers the project's clients, curl -H and OpenAI's SDKs send: taken by one set look-up.
_JSON_TYPES = frozenset({"application/json", "application/json; charset=utf-8", "application/json;charset=utf-8"})


def is_json_type(content_type: str) -> bool:
    """application/json or application/*+json, with no charset or UTF-8 (JSON is UTF-8: RFC 8259)."""
    mime, *params = content_type.lower().split(";")
    mime = mime.strip()
    if mime != "application/json" and not (mime.startswith("application/") and mime.endswith("+json")):
        return False
    for p in params:
        name, _, value = p.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            return False
    return True


def check_json_type(request: web.Request) -> None:
    """A body labelled as something else than JSON (curl -d's application/x-www-form-urlencoded, text/plain) is
    a 415 naming the header and its fix; a body with no Content-Type at all is read as JSON."""
    ct = request.headers.get("Content-Type")
    if ct is None or ct in _JSON_TYPES or is_json_type(ct):
        return
    raise UnsupportedMediaType(
        f"request body is labelled Content-Type: {ct[:100]!r}, and the daemon reads only JSON (UTF-8): send"
        f" the header Content-Type: application/json (curl: -H 'Content-Type: application/json')"
    )


async def read_body(request: web.Request) -> bytes:
    """The request's body as sent, decoded as its Content-Encoding says (aiohttp does that); one that does
    not decode is a 400 bad_body naming why (aiohttp's own error would have been a 500); one whose
    Content-Type is not JSON is a 415 (check_json_type); one not whole within connection_idle_timeout is a
    408 request_timeout (aiohttp times no body: an app that stalled its body held its connection for good)."""
    check_json_type(request)
    within = idle_of(request.app.get(DAEMON_KEY))
    try:
        async with asyncio.timeout(within):
            return await request.read()
    except TimeoutError:
        raise BodyTimeout(
            f"the request body did not arrive whole within {within:g} s (connection_idle_timeout in the daemon's"
            f" config.toml): send the body with the request, as its Content-Length says"
        ) from None
    except web.RequestPayloadError as exc:
        why = getattr(exc.__cause__, "message", None) or str(exc)
        raise BadBody(
            f"request body cannot be read: {' '.join(str(why).split())} (send the JSON as it is, or compressed as"
            f" its Content-Encoding header says)"
        ) from None


async def body_json(request: web.Request) -> Any:
    """The request's body parsed (an empty body is {}); malformed JSON is a 400 bad_json."""
    if request.content_length == 0 or not request.can_read_body:
        return {}
    return parse_json(await read_body(request))


# Python's refusal of an integer of more digits than it converts (sys.int_info.str_digits_check_threshold)
_TOO_MANY_DIGITS = re.compile(r"integer string conversion: value has (\d+) digits")


def json_error(exc: ValueError) -> str:
    """What json.loads refused, said to an app: not valid JSON, or a number too long to read (Python's own
    words for that name a setting of the daemon's interpreter)."""
    if m := _TOO_MANY_DIGITS.search(str(exc)):
        return (
            f"request body holds a number of {m[1]} digits, too long to read: sessions hold integers of at most"
            f" 64 bits (send a larger one as a string)"
        )
    return f"request body is not valid JSON: {exc}"


def parse_json(raw: bytes) -> Any:
    """A body's bytes parsed, as body_json does."""
    if not raw:  # no body at all; whitespace alone is not JSON and gets the error below
        return {}
    try:
        data = loads(raw)
    except DuplicateKey as exc:
        raise _bad_json(exc.message()) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad_json(json_error(exc)) from None
    except RecursionError:
        raise _bad_json("request body is nested too deeply to be read (sessions hold at most 32 levels)") from None
    if _SURROGATE_ESCAPE.search(raw):  # rare: only then is every string looked at
        v.find_lone_surrogate(data)
    return data


async def body(request: web.Request) -> dict:
    """The request's body, checked against the route's request model (a 422 naming the field)."""
    return v.checker(request[ROUTE_KEY].request)(await body_json(request))


async def body_as(request: web.Request, model: Any, unless: bytes, nested: tuple[str, ...]) -> dict:
    """The request's body as `body` gives it, first tried in one call (validate.from_json) against `model`,
    a member of the route's request model that the body is most often (a single message, not a batch).
    Whatever that call does not take goes the usual way (parse_json, then the route's check), so it is
    refused as it always was; so does, at once, a body holding `unless` (a batch's key: a parse that
    fails costs as much as one that does not) or escaping a UTF-16 surrogate (only json.loads and then
    the lone-surrogate scan name a lone one), and one not surely giving each key once
    (validate.keys_spelled; `nested`: the model's fields that hold objects)."""
    if request.content_length == 0 or not request.can_read_body:
        return await body(request)
    return checked_as(await read_body(request), model, unless, nested, request[ROUTE_KEY].request)


def checked_as(raw: bytes, model: Any, unless: bytes, nested: tuple[str, ...], whole: Any) -> dict:
    """A body's bytes checked as body_as checks them, against `model` first and then `whole` (the route's
    request model): for a body that comes other than as a request's (the append stream's frames)."""
    if raw and unless not in raw and not _SURROGATE_ESCAPE.search(raw):
        data = v.from_json(model, raw)
        if (
            data is not None
            and not any(data.get(k) for k in nested)
            and len(v.keys_spelled(model).findall(raw)) == len(data)
        ):
            return data
    return v.checker(whole)(parse_json(raw))


def query(request: web.Request) -> dict:
    """The query string, checked against the route's query model (a parameter it does not name was refused
    before the handler ran: daemon/api.py)."""
    return checked_query(request[ROUTE_KEY].query, request.query)


def session_id(request: web.Request) -> str:
    return request.match_info["id"]
