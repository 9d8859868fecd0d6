"""A change stream cut mid-way (the daemon killed, or its connection aborted) after it wrote several events:
every whole event written before the cut is the app's, however long the app waited before reading them. The
async client lost those aiohttp had read but the app had not: aiohttp raises the cut's ClientPayloadError at
the next read, before the lines still in its buffer. And a resume (reconnect=True) after a cut neither repeats
nor skips an event."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile

import pytest
from aiohttp import web

from sessiond.client import AsyncClient, Client
from waiting import eventually

RUN = "0123456789ab"


def _event(n: int) -> bytes:
    ev = {"id": f"{RUN}-{n}", "type": "messages.appended", "n": n}
    return f"id: {ev['id']}\nevent: {ev['type']}\ndata: {json.dumps(ev)}\n\n".encode()


class CutServer:
    """GET /v1/events on a Unix socket: a first stream writes events 1..`first`, then its connection is cut
    (`how`: "close", its buffered bytes sent first; "abort", once they are); a stream resumed after event n
    writes n+1..`last` and ends."""

    def __init__(self, path: str, how: str, first: int = 5, last: int = 8):
        self.path, self.how, self.first, self.last = path, how, first, last
        self.cut = asyncio.Event()
        self.resumed_after: list[str | None] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        after = request.headers.get("Last-Event-ID")
        self.resumed_after.append(after)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if after is None:
            await resp.write(f"id: {RUN}-0\n\n".encode())
            for n in range(1, self.first + 1):
                await resp.write(_event(n))
            transport = request.transport
            assert transport is not None
            if self.how == "abort":
                while transport.get_write_buffer_size():  # every byte written handed to the kernel
                    await asyncio.sleep(0)
                transport.abort()
            else:
                transport.close()
            self.cut.set()
            return resp
        for n in range(int(after.split("-")[1]) + 1, self.last + 1):
            await resp.write(_event(n))
        await resp.write_eof()
        return resp

    async def __aenter__(self) -> CutServer:
        app = web.Application()
        app.router.add_get("/v1/events", self.handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.UnixSite(self._runner, self.path).start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()


@pytest.fixture
def sock():
    d = tempfile.mkdtemp(prefix="sd-cut-")
    yield os.path.join(d, "s")
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    os.rmdir(d)


async def _read_late(events, server: CutServer) -> list[int]:
    """The events' "n", read only once the cut has reached the client (the app busy elsewhere meanwhile)."""
    await asyncio.wait_for(server.cut.wait(), 10)
    content = events.resp.content
    await eventually(lambda: content.is_eof() or content.exception() is not None, what="the cut read by aiohttp")
    async with asyncio.timeout(10):
        return [ev["n"] async for ev in events]


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_async_events_yield_every_event_written_before_a_cut(sock, how):
    async with CutServer(sock, how) as server, AsyncClient(os.path.dirname(sock), socket=sock) as ac:
        events = await ac.events(reconnect=False)
        assert await _read_late(events, server) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_async_events_resume_after_a_cut_neither_repeating_nor_skipping(sock, how):
    async with CutServer(sock, how) as server, AsyncClient(os.path.dirname(sock), socket=sock) as ac:
        events = await ac.events()
        first = await anext(events)  # the app read one, then was busy while the rest came and the cut
        await asyncio.wait_for(server.cut.wait(), 10)
        got = [first["n"]]
        async with asyncio.timeout(10):
            async for ev in events:
                got.append(ev["n"])
                if ev["n"] == server.last:
                    break
        await events.aclose()
    assert got == list(range(1, server.last + 1))
    assert server.resumed_after[1] == f"{RUN}-5"


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_blocking_events_yield_every_event_written_before_a_cut(sock, how):
    async with CutServer(sock, how) as server:
        c = Client(os.path.dirname(sock), socket=sock)
        events = await asyncio.to_thread(c.events, reconnect=False)
        await asyncio.wait_for(server.cut.wait(), 10)
        got = await asyncio.wait_for(asyncio.to_thread(lambda: [ev["n"] for ev in events]), 10)
        events.close()
    assert got == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_blocking_events_resume_after_a_cut_neither_repeating_nor_skipping(sock, how):
    async with CutServer(sock, how) as server:
        c = Client(os.path.dirname(sock), socket=sock)
        events = await asyncio.to_thread(c.events)
        await asyncio.wait_for(server.cut.wait(), 10)

        def read() -> list[int]:
            got = []
            for ev in events:
                got.append(ev["n"])
                if ev["n"] == server.last:
                    return got
            return got

        got = await asyncio.wait_for(asyncio.to_thread(read), 10)
        events.close()
    assert got == list(range(1, server.last + 1))
    assert server.resumed_after[1] == f"{RUN}-5"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.mark.parametrize("cut", [0, 1], ids=["before-its-crlf", "inside-its-crlf"])
async def test_blocking_events_yield_the_whole_event_of_a_chunk_cut_after_its_data(sock, cut):
    """An aborted connection ends wherever the kernel had got to in the transport's buffer: here after the
    whole of the last event's chunk data, before (or inside) the CRLF closing the chunk. The event is whole:
    the blocking client dropped the chunk, and with it the event."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    last = _event(3)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head + _chunk(_event(1)) + _chunk(_event(2)) + b"%x\r\n" % len(last) + last + b"\r"[:cut])
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(serve, sock)
    try:
        c = Client(os.path.dirname(sock), socket=sock)
        events = await asyncio.to_thread(c.events, reconnect=False)
        got = await asyncio.wait_for(asyncio.to_thread(lambda: [ev["n"] for ev in events]), 10)
        events.close()
    finally:
        server.close()
        await server.wait_closed()
    assert got == [1, 2, 3]
    assert events.last_event_id == f"{RUN}-3"
