"""A provider's stream whose lines end in a bare CR, or CRLF, not LF alone: the server-sent events format
allows all three (a provider, or a proxy in front of it, may send CR alone). The daemon split lines on LF
only: a stream of CR-ended lines was read as one long line with no event in it, refused as
provider_bad_answer ("answered with no server-sent events"), the answer lost. Now a line ends at CR, LF or
CRLF, a CRLF split between two reads ending one line, not two."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from conftest import started_with_provider
from servers.s5portal import Threaded
from sessiond.daemon.streambody import Body

WORDS = ["one", " two", " three"]


def provider(end: bytes) -> web.Application:
    """A streaming provider whose lines end in `end`, each event written in two pieces cut inside its end."""

    async def completions(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        events = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
        events += [{"choices": [{"index": 0, "delta": {"content": w}}]} for w in WORDS]
        events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        for ev in events:
            raw = b": a comment" + end + b"data: " + json.dumps(ev).encode() + end + end
            cut = len(raw) - len(end) - 1  # (a CRLF cut between its CR and its LF)
            await resp.write(raw[:cut])
            await resp.write(raw[cut:])
        await resp.write(b"data: [DONE]" + end + end)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    return app


@pytest.mark.parametrize("end", [b"\r", b"\r\n", b"\n"], ids=["cr", "crlf", "lf"])
def test_a_stream_s_lines_may_end_in_cr_crlf_or_lf(make_daemon, end):
    server = Threaded(provider(end)).start()
    try:
        d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", name="p")
        c = d.client()
        sid = c.create_session(model="m")["id"]
        assert "".join(c.complete_stream(sid, "q")) == "".join(WORDS)
        [a] = [m for m in c.messages(sid)["messages"] if m["role"] == "assistant"]
        assert a["content"] == "".join(WORDS) and not a.get("interrupted") and not a.get("error")
    finally:
        server.stop()


class Pieces:
    """A StreamReader's readany() over pieces given in advance."""

    def __init__(self, *pieces: bytes):
        self._pieces = list(pieces)

    async def readany(self) -> bytes:
        return self._pieces.pop(0) if self._pieces else b""


async def _lines(*pieces: bytes) -> list[bytes]:
    """The lines read of `pieces`, without their ends (a CRLF cut between pieces may come as one)."""
    body = Body(Pieces(*pieces))  # type: ignore[arg-type]
    lines = []
    while line := await body.readline():
        lines.append(line.rstrip(b"\r\n"))
    body.stop()
    return lines


async def test_lines_end_at_cr_lf_or_crlf_wherever_the_pieces_are_cut():
    assert await _lines(b"a\rb\r\nc\nd") == [b"a", b"b", b"c", b"d"]
    # an LF the next piece begins with is the end of the CRLF whose CR ended the line, not a line of its own
    assert await _lines(b"a\r", b"\nb\r", b"\r", b"c") == [b"a", b"b", b"", b"c"]
    assert await _lines(b"\r\n\r\n", b"\n") == [b"", b"", b""]
    assert await _lines(b"a\r") == [b"a"]


async def test_a_cr_ended_line_is_read_before_the_next_piece_comes():
    more = asyncio.Event()

    class Held(Pieces):
        async def readany(self) -> bytes:
            if self._pieces == [b"\nb\n"]:
                await more.wait()
            return await super().readany()

    body = Body(Held(b"a\r", b"\nb\n"))  # type: ignore[arg-type]
    assert await asyncio.wait_for(body.readline(), 10) == b"a\r"
    more.set()
    assert await body.readline() == b"b\n"
    assert await body.readline() == b""
    body.stop()
