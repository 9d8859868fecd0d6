"""Server-sent events: every change, as it happens; after a Last-Event-ID, what followed it first."""

import asyncio
import logging

from aiohttp import web

from ...api.events import LAST_EVENT_ID_HEADER, parse_event_id
from ...storage.errors import BadParameter
from ..events import BEHIND, DROPPED
from ..home import Config
from ..unread import Writes, idle_of
from .common import daemon_of

log = logging.getLogger("sessiond")


def dropped_comment(backlog: int) -> bytes:
    """The comment a subscriber too far behind reads last."""
    return (
        f": dropped: this stream held more than {backlog:,} bytes or {BEHIND:,} events unsent (its app reads too "
        "slowly, or not at all); open it again with the Last-Event-ID of the last event read\n\n"
    ).encode()


def _resume_after(request: web.Request) -> tuple[str, int] | None:
    """The id the stream resumes after: the Last-Event-ID header's, else the last_event_id parameter's (the
    header wins: a browser's EventSource sends it on reconnecting, newer than the one in its URL). A
    malformed one is a 400: the app would otherwise never learn that it resumes nothing."""
    header = request.headers.getall(LAST_EVENT_ID_HEADER, [])
    given = header or request.query.getall("last_event_id", [])
    if not given:
        return None
    what = f"the {LAST_EVENT_ID_HEADER} header" if header else "query parameter last_event_id"
    if len(given) > 1:
        raise BadParameter(f"{what} is given more than once", parameter="last_event_id")
    if not given[0] and header:  # EventSource's reset: an empty Last-Event-ID is no id
        return None
    after = parse_event_id(given[0])
    if after is None:
        raise BadParameter(
            f"{what} must be the id of an event of GET /v1/events (RUN-SEQ: 12 hex digits, a dash, a number), "
            f"not {given[0]!r:.60}",
            parameter="last_event_id",
        )
    return after


async def events(request: web.Request) -> web.StreamResponse:
    d = daemon_of(request)
    after = _resume_after(request)
    try:
        queue, first = d.events.subscribe(after)  # the kept events after `after`, with nothing between them
        start = d.events.position()  # ... and where the live events start
    except ValueError as exc:
        raise BadParameter(str(exc), parameter="last_event_id") from None
    hang_up: list[asyncio.TimerHandle] = []  # set once the subscriber is dropped
    try:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        # An event that cannot be written for connection_idle_timeout (the app stopped reading: the
        # connection is full) hangs the connection up (unread.py); a subscriber over event_backlog bytes or
        # BEHIND events behind, reading or not, is dropped (daemon/events.py): what it has not been sent is
        # let go.
        out = Writes(request, resp, idle_of(d))
        keepalive = keepalive_of(d)
        transport = request.transport
        queue.on_drop = lambda: hang_up.append(asyncio.get_running_loop().call_later(keepalive, _abort, transport))
        # a new stream starts with where it is (an id alone, no event): resuming after it misses nothing
        await out.write(b": sessiond events\n\n" + (b"" if after is not None else f"id: {start}\n\n".encode()))
        for data in first:
            await out.write(data)
        while True:
            try:
                data = await asyncio.wait_for(queue.get(), timeout=keepalive)
            except TimeoutError:  # (a subscriber gone meanwhile is seen by this write: it fails, and it is let go)
                await out.write(b": keep-alive\n\n")
                continue
            if data is None:
                break
            if data is DROPPED:
                await out.write(dropped_comment(d.events.backlog))
                break
            assert isinstance(data, bytes)
            await out.write(data)
    except ConnectionResetError:
        pass  # the app went away, or was hung up on
    finally:  # a CancelledError (the daemon stopping, the app gone) goes on up: swallowing it hangs shutdown
        d.events.unsubscribe(queue)
        for timer in hang_up:
            timer.cancel()
    return resp


def _abort(transport: asyncio.Transport | None) -> None:
    """A dropped subscriber's stream may be stuck in a write (its app reads nothing, its connection full):
    then the comment saying why cannot be written either, and the stream would hold its connection, task
    and the bytes waiting in it for connection_idle_timeout. Its connection is aborted event_keepalive
    seconds after the drop, unless the stream ended meanwhile (the timer cancelled)."""
    if transport is not None and not transport.is_closing():
        log.info(
            "a dropped event stream (GET /v1/events) was hung up on: its connection stayed full",
            extra={"event": "events.hung_up"},
        )
        transport.abort()


def keepalive_of(d: object) -> float:
    """Seconds of no event after which a stream sends a comment (config.toml's event_keepalive): proxies close
    a silent stream, and the write finds a subscriber that went away (a closed connection gives no other sign
    while nothing is written to it)."""
    return getattr(getattr(d, "config", None), "event_keepalive", Config.event_keepalive)
