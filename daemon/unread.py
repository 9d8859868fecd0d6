"""Answers an app may leave unread: the socket API hangs up on an app that leaves one unread, the connection
full, for connection_idle_timeout, so that it holds no connection, handler task or unsent answer here for
good (an app that sends requests and reads none of the answers, an event subscriber that stopped reading).

aiohttp writes an answer and then waits for the connection to take it (its writer drains once more than
64 KiB wait in the transport), with no time limit; a write that cannot wait (a small answer, nothing of an
earlier one still waiting in the transport) is not timed: a timer per answer would cost every request, the
appends' POST first. A write that can wait is done under a timer that aborts the transport (a close would
wait for the app to read too): a large answer, or any answer while some of an earlier one is still unsent.
The append stream (routes/appends.py) times its answers the same way.

The daemon stopping does not wait that long: the writes still waiting for their app STOP_GRACE seconds
after it began are hung up on (hang_up_stalled, on the app's shutdown), as the event streams are
(daemon/events.py); without it a stop waited for aiohttp's shutdown timeout, a minute."""

from __future__ import annotations

import asyncio
import weakref

from aiohttp import web

from .home import Config

# bytes of an answer past which its write may wait for the app to read (aiohttp's writer waits for the
# transport to drain past 64 KiB written; the kernel's socket buffer takes ~200 KiB)
MAY_WAIT = 16 << 10
STOP_GRACE = 1.0  # seconds a stopping daemon lets the writes that wait for their app finish


class _Waiting:
    """The connections of one app with a write waiting for their app (under its timer)."""

    def __init__(self) -> None:
        self.transports: set[asyncio.Transport] = set()
        self.none = asyncio.Event()
        self.none.set()

    def add(self, transport: asyncio.Transport) -> None:
        self.transports.add(transport)
        self.none.clear()

    def discard(self, transport: asyncio.Transport) -> None:
        self.transports.discard(transport)
        if not self.transports:
            self.none.set()


_WAITING: weakref.WeakKeyDictionary[web.Application, _Waiting] = weakref.WeakKeyDictionary()


async def hang_up_stalled(app: web.Application) -> None:
    """The app's shutdown: the writes that wait for their app are given STOP_GRACE seconds, then hung up on."""
    waiting = _WAITING.get(app)
    if waiting is None or not waiting.transports:
        return
    try:
        await asyncio.wait_for(waiting.none.wait(), STOP_GRACE)
    except TimeoutError:
        for transport in list(waiting.transports):
            transport.abort()


class _Timed:
    """A write that may wait for its app: its connection aborted after `idle` seconds, and known to the
    app's shutdown meanwhile."""

    def __init__(self, app: web.Application, transport: asyncio.Transport, idle: float) -> None:
        self.transport = transport
        self.waiting = _WAITING.get(app) or _WAITING.setdefault(app, _Waiting())
        self.waiting.add(transport)
        self.timer = asyncio.get_running_loop().call_later(idle, transport.abort)

    def done(self) -> None:
        self.timer.cancel()
        self.waiting.discard(self.transport)


def idle_of(d: object) -> float:
    """The daemon's connection_idle_timeout (the default for an owner of the routes with no config)."""
    return getattr(getattr(d, "config", None), "connection_idle_timeout", Config.connection_idle_timeout)


def may_wait(transport: asyncio.Transport | None, size: int) -> bool:
    """Whether writing `size` bytes to the transport may wait for the app to read."""
    return transport is not None and (size > MAY_WAIT or transport.get_write_buffer_size() > 0)


def waits(request: web.Request, resp: web.StreamResponse) -> bool:
    """Whether a handler's answer, not yet sent (aiohttp sends it after the handler, untimed), may wait
    for the app to read: then send() sends it."""
    if resp.prepared:
        return False
    body = resp.body if isinstance(resp, web.Response) else None
    size = len(body) if isinstance(body, (bytes, bytearray)) else MAY_WAIT + 1  # (a payload: a file, a stream)
    return may_wait(request.transport, size)


async def send(request: web.Request, resp: web.StreamResponse, idle: float) -> None:
    """A handler's answer sent here, under the timer. A connection broken meanwhile is aiohttp's to see (it
    finds the answer sent, or fails to send the rest, as it would have)."""
    transport = request.transport
    assert transport is not None
    stalled = _Timed(request.app, transport, idle)
    try:
        await resp.prepare(request)
        await resp.write_eof()
    except ConnectionError:
        pass  # the app went away, or was hung up on
    finally:
        stalled.done()


class Writes:
    """A stream's writes (an event stream's, a model's answer passed on) timed as above: `await write(data)`,
    and `await end(data)` for its last (the end of the stream, written and drained)."""

    def __init__(self, request: web.Request, resp: web.StreamResponse, idle: float) -> None:
        self.app, self.transport, self.resp, self.idle = request.app, request.transport, resp, idle

    async def write(self, data: bytes) -> None:
        await self._timed(data, False)

    async def end(self, data: bytes = b"") -> None:
        await self._timed(data, True)

    async def _timed(self, data: bytes, eof: bool) -> None:
        transport = self.transport
        stalled = None
        if may_wait(transport, len(data)):
            assert transport is not None
            stalled = _Timed(self.app, transport, self.idle)
        try:
            if eof:
                await self.resp.write_eof(data)
            else:
                await self.resp.write(data)
        finally:
            if stalled is not None:
                stalled.done()
