"""Answers an app may leave unread: the socket API hangs up on an app that leaves one unread, the connection
full, for connection_idle_timeout, so that it holds no connection, handler task or unsent answer here for
good (an app that sends requests and reads none of the answers, an event subscriber that stopped reading).

aiohttp writes an answer and then waits for the connection to take it (its writer drains once more than
64 KiB wait in the transport), with no time limit; a write that cannot wait (a small answer, nothing of an
earlier one still waiting in the transport) is not timed: a timer per answer would cost every request, the
appends' POST first. A write that can wait is done under a timer that aborts the transport (a close would
wait for the app to read too): a large answer, or any answer while some of an earlier one is still unsent.
The append stream (routes/appends.py) times its answers the same way."""

from __future__ import annotations

import asyncio

from aiohttp import web

IDLE_TIMEOUT = 75.0  # seconds, Config.connection_idle_timeout's default (aiohttp's keep-alive timeout)
# bytes of an answer past which its write may wait for the app to read (aiohttp's writer waits for the
# transport to drain past 64 KiB written; the kernel's socket buffer takes ~200 KiB)
MAY_WAIT = 16 << 10


def idle_of(d: object) -> float:
    """The daemon's connection_idle_timeout (the default for an owner of the routes with no config)."""
    return getattr(getattr(d, "config", None), "connection_idle_timeout", IDLE_TIMEOUT)


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
    stalled = asyncio.get_running_loop().call_later(idle, transport.abort)
    try:
        await resp.prepare(request)
        await resp.write_eof()
    except ConnectionError:
        pass  # the app went away, or was hung up on
    finally:
        stalled.cancel()


class Writes:
    """A stream's writes (an event stream's, a model's answer passed on) timed as above: `await write(data)`,
    and `await end(data)` for its last (the end of the stream, written and drained)."""

    def __init__(self, request: web.Request, resp: web.StreamResponse, idle: float) -> None:
        self.transport, self.resp, self.idle = request.transport, resp, idle

    async def write(self, data: bytes) -> None:
        await self._timed(data, False)

    async def end(self, data: bytes = b"") -> None:
        await self._timed(data, True)

    async def _timed(self, data: bytes, eof: bool) -> None:
        transport = self.transport
        stalled = None
        if may_wait(transport, len(data)):
            assert transport is not None
            stalled = asyncio.get_running_loop().call_later(self.idle, transport.abort)
        try:
            if eof:
                await self.resp.write_eof(data)
            else:
                await self.resp.write(data)
        finally:
            if stalled is not None:
                stalled.cancel()
