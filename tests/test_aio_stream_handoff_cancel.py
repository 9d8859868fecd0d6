"""AsyncClient.complete_stream's task cancelled (asyncio.CancelledError: the app's timeout, its Ctrl-C under
asyncio.run) between the question being sent and the app holding the stream: the connection must be closed
there, so that the daemon sees the app leave and stops the generation, as the blocking client's does since
a Ctrl-C at that point left its connection open (tests/test_ask_cli.py): the daemon recorded the model's
whole answer, for a question the app had stopped before any of it arrived. Each await of the hand-off: as
the answer's head arrives (inside aiohttp's request), and as the stream is made of it (the client's own)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from sessiond.client import aio
from waiting import eventually


@pytest.mark.parametrize("where", ["head", "handoff"])
@pytest.mark.parametrize("how", ["await", "async_with", "async_for"])
async def test_a_cancel_before_the_app_holds_the_stream_leaves_the_daemon_no_answer(
    echo_daemon, monkeypatch, where, how
):
    d, p = echo_daemon
    sid = d.client().create_session(model="echo-1")["id"]
    p.faults.first_delay = 3  # the fault itself: the stream open, the model silent, no word yet
    arrived = asyncio.Event()

    if where == "head":  # the cancel lands as the daemon's head is read, inside aiohttp's request
        start = aiohttp.ClientResponse.start

        async def start_then_cancelled(self, conn):
            resp = await start(self, conn)
            if self.method == "POST" and self.url.path.endswith("/complete"):
                arrived.set()
                asyncio.current_task().cancel()
                await asyncio.sleep(0)  # (where the cancel lands)
            return resp

        monkeypatch.setattr(aiohttp.ClientResponse, "start", start_then_cancelled)
    else:  # the cancel lands as the client makes its stream of the answer, before it hands it over

        def cancelled(self, resp, sid, key):
            arrived.set()
            raise asyncio.CancelledError

        monkeypatch.setattr(aio.AsyncClient, "_answer_events", cancelled)

    async with d.aclient() as ac:

        async def app():
            if how == "await":
                stream = await ac.complete_stream(sid, "hello")
                await stream.aclose()
            elif how == "async_with":
                async with ac.complete_stream(sid, "hello") as stream:
                    async for _ in stream:
                        pass
            else:
                async for _ in ac.complete_stream(sid, "hello"):
                    pass

        task = asyncio.create_task(app())
        with pytest.raises(asyncio.CancelledError):
            await task
        assert arrived.is_set()
        await eventually(lambda: p.left_unanswered + p.streams_stopped == 1, timeout=20, what="the request dropped")
        record = await ac.messages(sid)
    assert [m for m in record["messages"] if m["role"] == "assistant" and m.get("content")] == []
