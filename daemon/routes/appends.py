"""The append stream, GET /v1/appends upgraded to a WebSocket: the same appends as
POST /v1/sessions/{id}/messages, one per text frame, each answered by a frame once committed. An HTTP
request costs aiohttp ~70 us of the daemon's CPU, a WebSocket message ~25 us: under many appends the
stream is the cheaper way in (bench/results/profile-load.md, the fifteenth pass).

A frame is a head line, a newline, then the POST's body exactly as it would be sent:
    {"tag": 7, "session": "<id>", "key": "<Idempotency-Key>"}\\n{"role": "user", "content": "hi"}
and is answered with {"tag": 7, "status": 201, "body": <what the POST answers>}: the same status and JSON,
an error's too, through the same code (messages.append_body, messages.append, failures.failure).

Frames may be sent ahead of their answers (pipelined). On a stream opened as `GET /v1/appends?pipeline=1`
(the async client's) a connection's frames are under way together, at
most IN_FLIGHT of them and, past the first, IN_FLIGHT_BYTES of text (the next is read when the oldest is
answered: back-pressure; a body may be 256 MiB, and 64 of them are not held at once), so that pipelined
appends share SQLite commits (storage/groupcommit.py) as many connections' do. Still, the frames of one
connection are answered in the order they came, each after its append is committed (durable, as the POST's
201 is); the appends of one connection to one session commit in frame order (their seq and lamport follow
it: each frame's append reaches the writer's lock, which is first come first served, in its task's first
step, and its tasks start in frame order; a frame whose body names a chat, which messages._append may
append in a second transaction after resolving the name, holds the session's later frames until it is
done); an error in a frame is its answer alone. A connection that ends (the app gone, the daemon stopping)
stops reading; the appends under way go on to their end, unanswered, and the handler returns only after the
last of them: what was answered is committed, what was not may be or not, as a POST whose connection broke.
On a stream opened without it (the blocking client's: one append in flight per connection) each frame is
appended and answered before the next is read: a task per frame and the answers' queue cost such a client
~20-50 us of the daemon's loop per append and a third of its shared commits (bench/loopcpu.py, 16 clients),
and it has nothing to pipeline.

A frame that is no append (binary, no head line, a head that is not JSON or lacks its session or key, a body
over the POST's limit) is answered with a 400 bad_frame (413 too_large for the body) naming what is wrong,
and changes nothing; the connection goes on. A frame larger than FRAME_LIMIT, or a text frame that is not
UTF-8, is a breach of the WebSocket protocol itself: aiohttp closes the connection (1009, 1007). A stream
with no frame read, no answer sent and none due for connection_idle_timeout seconds (config.toml; 75 by
default, as an idle HTTP connection) is closed (1000, its reason saying so), so that an app that went away
holds no file descriptor and task here; an app that does not answer the daemon's close frame (idle, or the daemon
stopping) within CLOSE_TIMEOUT is hung up on, and so is one that leaves an answer unread (the connection
full of its unread answers) for connection_idle_timeout. The handshake's answer names that timeout,
`Keep-Alive: timeout=N` (whole seconds): the clients leave a stream idle for half of it and append on a new
one, rather than on a stream whose close may be on its way."""

import asyncio
import json
import weakref
from collections.abc import Awaitable, Callable

from aiohttp import WSMessage, WSMsgType, web

from ...api.jsonkeys import DuplicateKey, loads
from ...api.types import FIELD_DEPTH, MAX_DEPTH, nested_too_deeply
from ...storage.errors import SessiondError
from .. import validate as v
from ..unread import idle_of, may_wait
from .common import daemon_of, query
from .failures import BODY_LIMIT, error_body, failure, home_of, lost_instead, too_large
from .messages import append, append_body

HEAD_LIMIT = 4096  # bytes of a frame's head line (a session id is at most 128, a key 255)
FRAME_LIMIT = BODY_LIMIT + HEAD_LIMIT + 1
PATH = "/v1/appends"
# seconds the daemon waits, after its close frame, for the app's before it hangs up (aiohttp's default, 10 s,
# held a silent app's descriptor and task that long after an idle close)
CLOSE_TIMEOUT = 1.0
IN_FLIGHT = 64  # frames of one connection under way at once (read, not yet answered)
IN_FLIGHT_BYTES = 16 << 20  # ... and their text (characters) at most, but for one frame: the next waits for room
WHERE = f"GET {PATH}"

_encode = json.JSONEncoder(ensure_ascii=False).encode

Answer = tuple[object, int, object]  # a frame's (tag, status, body)


class BadFrame(SessiondError):
    code = "bad_frame"
    status = 400


# The open streams of each app (each with its connection's transport), closed when the daemon stops (a
# WebSocket's handler would otherwise hold the server's shutdown until its timeout).
_OPEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


async def close_streams(app: web.Application) -> None:
    await asyncio.gather(*(_stopping(ws, transport) for ws, transport in list(_OPEN.get(app, {}).items())))


async def _stopping(ws: web.WebSocketResponse, transport: asyncio.Transport | None) -> None:
    """Close a stream as the daemon stops. An app that has not taken the close frame within CLOSE_TIMEOUT (one
    that reads nothing, the connection full of its unread answers: the close, and a send of the handler,
    would wait for it to read, and the daemon's stop for them) is hung up on, as after an idle close."""
    if transport is not None:  # (a no-op on a connection closed by then)
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.abort)
    try:
        await ws.close(code=1001, message=b"the daemon is stopping")
    except Exception:  # (a ConnectionResetError, mostly: hung up on, or the app gone)
        pass


async def append_stream(request: web.Request) -> web.StreamResponse:
    d = daemon_of(request)
    idle = idle_of(d)
    ws = web.WebSocketResponse(max_msg_size=FRAME_LIMIT, compress=False, timeout=CLOSE_TIMEOUT)
    if not ws.can_prepare(request).ok:
        raise BadFrame(
            f"{WHERE} is a WebSocket: send it with the headers Connection: Upgrade, Upgrade: websocket,"
            " Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key"
        )
    pipelined = bool(query(request).get("pipeline")) if request.query_string else False
    # its idle timeout, whole seconds (rounded down), so that an app can leave an idle stream before it is
    # closed: an append sent as the close is on its way would be dropped with the stream, and sent again
    ws.headers["Keep-Alive"] = f"timeout={int(idle)}"
    await ws.prepare(request)
    streams = _OPEN.setdefault(request.app, weakref.WeakKeyDictionary())
    streams[ws] = request.transport
    try:
        if pipelined:
            await _Pipeline(d, ws, home_of(d), request.transport, idle).serve()
        else:
            await _in_turn(d, ws, home_of(d), request.transport, idle)
    finally:
        streams.pop(ws, None)
    return ws


async def _in_turn(d, ws: web.WebSocketResponse, home: str | None, transport, idle: float) -> None:
    """A stream's frames one at a time: each appended and answered before the next is read."""
    waits = _IdleWaits(idle)
    try:
        while True:
            try:
                msg = await waits.receive(ws)
            except TimeoutError:
                await ws.close(code=1000, message=f"idle for {idle:g} s: open a new stream to append".encode())
                return
            if msg.type is WSMsgType.TEXT:
                checked = _checked(msg.data, home)
                tag, status, body = checked if len(checked) == 3 else await _appended(d, home, *checked)
            elif msg.type is WSMsgType.BINARY:
                tag, status, body = None, 400, error_body(BadFrame.code, _BINARY)
            else:  # CLOSE, CLOSING, CLOSED, ERROR (aiohttp has closed it, or answered the app's close)
                return
            if not await _send_answer(ws, transport, (tag, status, body), idle, transport.abort):
                return
    finally:
        waits.stop()


class _IdleWaits:
    """A stream's waits for its next frame, each ended by a TimeoutError after `idle` seconds, as
    `ws.receive(timeout=idle)` would, through one timer for the stream rather than one per wait (asyncio's
    timeout, its timer made and cancelled at every frame, was ~5% of the loop's CPU per append under 16
    clients: bench/results/profile-load.md, the twenty-sixth pass). The timer, when it fires, sets itself again
    for the end of the wait under way (a wait begun since it was set), or, the wait idle that long, cancels the
    handler's task, which the wait takes as its timeout (a cancellation from elsewhere, the daemon stopping, goes
    on as one)."""

    __slots__ = ("_expired", "_handle", "_idle", "_loop", "_since", "_task", "_waiting")

    def __init__(self, idle: float):
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._idle = idle
        self._since = 0.0  # when the wait under way began
        self._waiting = False
        self._expired = False
        self._handle: asyncio.TimerHandle | None = None

    async def receive(self, ws: web.WebSocketResponse) -> WSMessage:
        self._since = now = self._loop.time()
        if self._handle is None:
            self._handle = self._loop.call_at(now + self._idle, self._fire)
        self._waiting = True
        try:
            return await ws.receive()
        except asyncio.CancelledError:
            if self._expired and self._task is not None and self._task.uncancel() == 0:
                self._expired = False
                raise TimeoutError from None
            raise
        finally:
            self._waiting = False

    def _fire(self) -> None:
        self._handle = None
        if not self._waiting:  # (set again by the next wait)
            return
        due = self._since + self._idle
        if self._loop.time() < due:
            self._handle = self._loop.call_at(due, self._fire)
        elif self._task is not None:
            self._expired = True
            self._task.cancel()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


async def _send_answer(
    ws: web.WebSocketResponse, transport, answer: Answer, idle: float, hang_up: Callable[[], None]
) -> bool:
    """Send a frame's answer; False if the connection is over (closed meanwhile, or hung up on). Answers the
    app left unread fill the connection until a send waits for room: after `idle` of that `hang_up` is called.
    Timed only when a send can wait (unread.py; a timer per answer costs every append): a large answer, or
    some of the earlier ones not yet taken by the kernel."""
    tag, status, body = answer
    text = _encode({"tag": tag, "status": status, "body": body})
    stalled = asyncio.get_running_loop().call_later(idle, hang_up) if may_wait(transport, len(text)) else None
    try:
        await ws.send_str(text)
    except Exception:  # closed meanwhile (a ConnectionResetError, mostly), or hung up on
        return False
    finally:
        if stalled is not None:
            stalled.cancel()
    return True


async def _appended(d, home: str | None, tag: object, sid: str, b: dict, key: str | None) -> Answer:
    try:
        return tag, 201, await append(d, sid, b, key)
    except Exception as exc:  # as the POST answers it (failures.py)
        status, data = failure(lost_instead(exc, d), WHERE, home)
        return tag, status, data


class _Pipeline:
    """One stream's frames: read ahead of their answers (at most IN_FLIGHT under way, IN_FLIGHT_BYTES of
    text), each appended in a task of its own, answered in frame order by a sender task."""

    def __init__(
        self, d, ws: web.WebSocketResponse, home: str | None, transport: asyncio.Transport | None, idle: float
    ):
        self.d, self.ws, self.home, self.transport, self.idle = d, ws, home, transport, idle
        self.turns = asyncio.Semaphore(IN_FLIGHT)
        # each frame's answer to come and its text's length, in frame order; None: the end
        self.answers: asyncio.Queue[tuple[Awaitable[Answer], int] | None] = asyncio.Queue()
        self.due = 0  # frames read and not yet answered
        self.due_size = 0  # ... their text's length
        self.answered = asyncio.Event()  # set as an answer is sent (room for the next frame)
        self.sent_at = 0.0  # the loop's time when the last answer was sent (the idle clock counts from it too)
        self.gone = False  # an answer could not be sent: the connection is over
        self.tasks: set[asyncio.Task[Answer]] = set()  # the appends under way
        # per session, the last of its frames not yet at its place in the writer's queue (a frame naming a chat,
        # until it is done; one waiting for such a frame, until it goes on): that session's next frame waits
        self.placing: dict[str, asyncio.Future[None]] = {}

    async def serve(self) -> None:
        sender = asyncio.create_task(self._send())
        try:
            while True:
                await self.turns.acquire()  # back-pressure: nothing more is read while IN_FLIGHT are due
                while self.due_size >= IN_FLIGHT_BYTES:  # ... or while the text of those due is that large
                    self.answered.clear()
                    await self.answered.wait()
                msg = await self._next(self.idle)
                if msg is None:
                    self.turns.release()
                    return
                self.due += 1
                size = len(msg.data)
                self.due_size += size
                if msg.type is WSMsgType.TEXT:
                    self.answers.put_nowait((self._start(msg.data), size))
                else:  # BINARY
                    self.answers.put_nowait((_answered(None, 400, error_body(BadFrame.code, _BINARY)), size))
        finally:
            self.answers.put_nowait(None)
            try:
                await sender  # every answer awaited, so no append of this connection is left running
            except asyncio.CancelledError:  # the handler cancelled as it waited: the appends too
                for t in list(self.tasks):
                    t.cancel()
                await asyncio.gather(*self.tasks, return_exceptions=True)
                raise

    async def _next(self, idle: float) -> WSMessage | None:
        """The next data frame, or None once the stream is over (closed by either side, broken, or idle: then
        closed here). Idle is `idle` seconds since both the last frame read and the last answer sent, with no
        answer due (an append answered late leaves its app the whole `idle` to send the next). Pings are
        answered by aiohttp."""
        wait = idle  # (this is called after the last frame was read)
        while not self.gone:
            try:
                msg = await self.ws.receive(timeout=wait)
            except TimeoutError:
                wait = idle
                if self.due:  # answers still due: not idle
                    continue
                left = self.sent_at + idle - asyncio.get_running_loop().time()
                if left > 0:  # an answer sent since: idle only since then
                    wait = left
                    continue
                await self.ws.close(code=1000, message=f"idle for {idle:g} s: open a new stream to append".encode())
                return None
            if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                return msg
            return None  # CLOSE, CLOSING, CLOSED, ERROR (aiohttp has closed it, or answered the app's close)
        return None

    async def _send(self) -> None:
        """The answers, in frame order, each once its frame's append ended; after the connection broke, the
        appends still awaited (not answered)."""
        while (pending := await self.answers.get()) is not None:
            answer = await pending[0]
            # (a timer, not wait_for: a task per answer would cost the stream much of what it saves)
            if not self.gone and not await _send_answer(self.ws, self.transport, answer, self.idle, self._hang_up):
                self.gone = True  # (the answers after it are lost too)
            self.sent_at = asyncio.get_running_loop().time()
            self.due -= 1
            self.due_size -= pending[1]
            self.turns.release()
            self.answered.set()

    def _hang_up(self) -> None:
        """An answer could not be written for the idle timeout: the app reads none (the connection is full of
        its unread answers). Aborted: a close would wait for it to read too."""
        self.gone = True
        if self.transport is not None:
            self.transport.abort()

    def _start(self, frame: str) -> Awaitable[Answer]:
        """A text frame's answer to come: checked here, its append begun in a task."""
        checked = _checked(frame, self.home)
        if len(checked) == 3:
            return _answered(*checked)
        tag, sid, b, key = checked
        before = self.placing.get(sid)
        if before is not None and before.done():
            before = None
        names = _names_chat(b)
        placed = asyncio.get_running_loop().create_future() if before is not None or names else None
        if placed is not None:
            self.placing[sid] = placed
        task = asyncio.create_task(self._append(tag, sid, b, key, before, placed, names))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _append(
        self,
        tag: object,
        sid: str,
        b: dict,
        key: str | None,
        before: asyncio.Future[None] | None,
        placed: asyncio.Future[None] | None,
        names: bool,
    ) -> Answer:
        """Append a checked frame, once the session's frame `before` it has its place; `placed` is this one's
        (set as its append reaches the writer's lock, in the same step; a frame naming a chat: when done)."""
        try:
            if before is not None:
                await before
            if placed is not None and not names:
                placed.set_result(None)
            return await _appended(self.d, self.home, tag, sid, b, key)
        finally:
            if placed is not None:
                if not placed.done():
                    placed.set_result(None)
                if self.placing.get(sid) is placed:
                    del self.placing[sid]


def _checked(frame: str, home: str | None) -> tuple:
    """A text frame checked: (tag, session, body, key) to append, or the (tag, status, answer) refusing it."""
    tag = None
    try:
        head_text, newline, raw = frame.partition("\n")
        head = _head(head_text, newline)
        tag = head.get("tag")
        _known_fields(head)
        sid, key = head.get("session"), head.get("key")
        if not isinstance(sid, str) or not sid:
            raise BadFrame('the frame\'s head has no "session": the id of the session to append to')
        if not isinstance(key, str):
            raise BadFrame('the frame\'s head has no "key": an Idempotency-Key (a new one per append)')
        body = raw.encode()
        if len(body) > BODY_LIMIT:
            return tag, 413, too_large()
        return tag, sid, append_body(body), v.idempotency_key(key)
    except Exception as exc:  # as the POST answers it (failures.py)
        return (tag, *failure(exc, WHERE, home))


def _answered(tag: object, status: int, body: object) -> Awaitable[Answer]:
    """An answer known at once (a frame refused before its append)."""
    done: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
    done.set_result((tag, status, body))
    return done


def _names_chat(b: dict) -> bool:
    """Whether an append's body names a chat (of the batch, or of one of its messages)."""
    return b.get("chat") is not None or any(m.get("chat") is not None for m in b.get("messages", ()))


HEAD_FIELDS = ("tag", "session", "key")
_HEAD_KEYS = frozenset(HEAD_FIELDS)
_strict_json = json.JSONEncoder(allow_nan=False, ensure_ascii=False).encode  # (one encoder, built once)
_BINARY = "a binary frame is not an append: send each append as a text frame (a head line, a newline, the body)"


def _head(text: str, newline: str) -> dict:
    if not newline:
        raise BadFrame(
            "a frame is a head line (JSON: tag, session, key), a newline, then the body a POST to"
            " /v1/sessions/{id}/messages takes; this one has no newline"
        )
    if len(text) > HEAD_LIMIT:
        raise BadFrame(f"the frame's head line is longer than {HEAD_LIMIT} characters")
    try:
        head = loads(text)
    except DuplicateKey as exc:
        raise BadFrame(exc.message("the frame's head line")) from None
    except (ValueError, RecursionError):
        head = None
    if not isinstance(head, dict):
        raise BadFrame(f"the frame's head line is not a JSON object: {text[:80]!r}")
    tag = head.get("tag")
    if tag is not None and not isinstance(tag, int):  # echoed in the answer: JSON every reader takes back
        # (Python's own reader stops some 900 levels in: the answer lost) held as a session's metadata is
        if nested_too_deeply(tag, FIELD_DEPTH):
            raise BadFrame(
                "the frame's head's tag is nested too deeply, as a session's metadata would be: a tag is any JSON"
                f" value nesting at most {MAX_DEPTH - FIELD_DEPTH + 1} levels, a number or a string inside counted"
                " as one (a number or a string will do)"
            )
        try:
            _strict_json(tag).encode()  # (as the answer is sent: UTF-8 text)
        except UnicodeEncodeError:
            raise BadFrame(
                "the frame's head has a tag holding a lone surrogate (\\ud800 to \\udfff alone), which is not"
                " valid Unicode text and cannot be sent back in the answer"
            ) from None
        except ValueError:
            raise BadFrame("the frame's head has a tag holding NaN or Infinity, which JSON cannot carry back") from None
    return head


def _known_fields(head: dict) -> None:
    """A head's fields are tag, session and key: another is refused (once its tag, read, can name the answer)."""
    if not head.keys() <= _HEAD_KEYS:  # (a "chat" here would be ignored: the message would go to the current chat)
        unknown = [k for k in head if k not in _HEAD_KEYS]
        raise BadFrame(
            f"the frame's head has unknown field(s) {', '.join(map(repr, unknown))[:200]}; it takes"
            f" {', '.join(HEAD_FIELDS)} (the append's own fields, such as chat, go in its body)"
        )
