"""The append stream, GET /v1/appends upgraded to a WebSocket: the same appends as
POST /v1/sessions/{id}/messages, one per text frame, each answered by a frame once committed. An HTTP
request costs aiohttp ~70 us of the daemon's CPU, a WebSocket message ~25 us: under many appends the
stream is the cheaper way in (bench/results/profile-load.md, the fifteenth pass).

A frame is a head line, a newline, then the POST's body exactly as it would be sent:
    {"tag": 7, "session": "<id>", "key": "<Idempotency-Key>"}\\n{"role": "user", "content": "hi"}
and is answered with {"tag": 7, "status": 201, "body": <what the POST answers>}: the same status and JSON,
an error's too, through the same code (messages.append_body, messages.append, failures.failure). The frames
of one connection are answered one at a time, in the order they came, each after its append is committed
(durable, as the POST's 201 is); they may be sent ahead of their answers (pipelined). A frame that is no
append (binary, no head line, a head that is not JSON or lacks its session or key, a body over the POST's
limit) is answered with a 400 bad_frame (413 too_large for the body) naming what is wrong, and changes
nothing; the connection goes on. A frame larger than FRAME_LIMIT, or a text frame that is not UTF-8, is a
breach of the WebSocket protocol itself: aiohttp closes the connection (1009, 1007). A stream with no frame
for connection_idle_timeout seconds (config.toml; 75 by default, as an idle HTTP connection) is closed
(1000, its reason saying so), so that an app that went away holds no file descriptor and task here; an app
that does not answer the daemon's close frame (idle, or the daemon stopping) within CLOSE_TIMEOUT is hung
up on."""

import json
import weakref

from aiohttp import WSMsgType, web

from ...storage.errors import SessiondError
from .. import validate as v
from .common import daemon_of
from .failures import BODY_LIMIT, error_body, failure, home_of, too_large
from .messages import append, append_body

HEAD_LIMIT = 4096  # bytes of a frame's head line (a session id is at most 128, a key 255)
FRAME_LIMIT = BODY_LIMIT + HEAD_LIMIT + 1
PATH = "/v1/appends"
IDLE_TIMEOUT = 75.0  # seconds, Config.connection_idle_timeout's default (aiohttp's keep-alive timeout)
# seconds the daemon waits, after its close frame, for the app's before it hangs up (aiohttp's default, 10 s,
# held a silent app's descriptor and task that long after an idle close); an app that reads answers at once
CLOSE_TIMEOUT = 1.0
WHERE = f"GET {PATH}"

_encode = json.JSONEncoder(ensure_ascii=False).encode


class BadFrame(SessiondError):
    code = "bad_frame"
    status = 400


# The open streams of each app, closed when the daemon stops (a WebSocket's handler would otherwise hold
# the server's shutdown until its timeout).
_OPEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


async def close_streams(app: web.Application) -> None:
    for ws in list(_OPEN.get(app, ())):
        await ws.close(code=1001, message=b"the daemon is stopping")


async def append_stream(request: web.Request) -> web.StreamResponse:
    d = daemon_of(request)
    idle = getattr(getattr(d, "config", None), "connection_idle_timeout", IDLE_TIMEOUT)
    ws = web.WebSocketResponse(max_msg_size=FRAME_LIMIT, compress=False, receive_timeout=idle, timeout=CLOSE_TIMEOUT)
    if not ws.can_prepare(request).ok:
        raise BadFrame(
            f"{WHERE} is a WebSocket: send it with the headers Connection: Upgrade, Upgrade: websocket,"
            " Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key"
        )
    await ws.prepare(request)
    home = home_of(d)
    streams = _OPEN.setdefault(request.app, weakref.WeakSet())
    streams.add(ws)
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                tag, status, body = await _answer(d, msg.data, home)
            else:  # BINARY (aiohttp answers pings and ends the loop on a close or an error)
                tag, status, body = None, 400, error_body(BadFrame.code, _BINARY)
            await ws.send_str(_encode({"tag": tag, "status": status, "body": body}))
    except TimeoutError:  # no frame for `idle` seconds (receive_timeout counts only the waits between frames)
        await ws.close(code=1000, message=f"idle for {idle:g} s: open a new stream to append".encode())
    except ConnectionResetError:
        pass
    finally:
        streams.discard(ws)
    return ws


_BINARY = "a binary frame is not an append: send each append as a text frame (a head line, a newline, the body)"


async def _answer(d, frame: str, home: str | None) -> tuple[object, int, dict]:
    """A text frame's (tag, status, answer)."""
    tag = None
    try:
        head_text, newline, raw = frame.partition("\n")
        head = _head(head_text, newline)
        tag = head.get("tag")
        sid, key = head.get("session"), head.get("key")
        if not isinstance(sid, str) or not sid:
            raise BadFrame('the frame\'s head has no "session": the id of the session to append to')
        if not isinstance(key, str):
            raise BadFrame('the frame\'s head has no "key": an Idempotency-Key (a new one per append)')
        body = raw.encode()
        if len(body) > BODY_LIMIT:
            return tag, 413, too_large()
        b = append_body(body)
        return tag, 201, await append(d, sid, b, v.idempotency_key(key))
    except Exception as exc:  # as the POST answers it (failures.py)
        status, data = failure(exc, WHERE, home)
        return tag, status, data


def _head(text: str, newline: str) -> dict:
    if not newline:
        raise BadFrame(
            "a frame is a head line (JSON: tag, session, key), a newline, then the body a POST to"
            " /v1/sessions/{id}/messages takes; this one has no newline"
        )
    if len(text) > HEAD_LIMIT:
        raise BadFrame(f"the frame's head line is longer than {HEAD_LIMIT} characters")
    try:
        head = json.loads(text)
    except (ValueError, RecursionError):
        head = None
    if not isinstance(head, dict):
        raise BadFrame(f"the frame's head line is not a JSON object: {text[:80]!r}")
    return head
