"""AsyncClient's streams stopped by another task than the one iterating them (a stop button's handler, a
shutdown): aclose() closed the iterator's async generator, which Python refuses while another task is inside it
(RuntimeError "aclose(): asynchronous generator is already running"), before closing the connection. The app got
that error, the stream went on (events kept arriving; a streamed answer was generated, recorded and paid for
whole). Now aclose() closes the connection first, and the iterating task's loop ends (no error), as a close
from the iterating task itself ends it."""

from __future__ import annotations

import asyncio

from sessiond.client import Client
from test_aio_close_in_flight import _awaiting
from test_aio_events_subscribed import reading_events
from test_aio_stream_stop import _answer
from waiting import eventually


async def test_async_events_closed_by_another_task_end_its_iteration(daemon):
    sid = Client(daemon.home).create_session(name="s")["id"]
    async with daemon.aclient() as ac:
        for reconnect in (False, True):
            events, reading = await reading_events(ac, sid, reconnect)
            await events.aclose()
            await asyncio.wait_for(reading, 10)  # ended, not resumed, no error
            assert events.resp.closed, reconnect
            assert [ev async for ev in events] == []


async def test_async_a_streamed_answer_closed_by_another_task_is_stopped(slow_stream):
    sid = slow_stream.client().create_session(model="echo-1")["id"]
    async with slow_stream.aclient() as ac:
        stream = await ac.complete_stream(sid, "a b c d e f g h i j")
        texts: list = []

        async def read() -> None:
            async for text in stream:
                texts.append(text)

        reading = asyncio.create_task(read())
        await eventually(lambda: texts, timeout=20, what="the answer's first text")
        await stream.aclose()
        await asyncio.wait_for(reading, 10)  # ended, no error
        answer = await _answer(ac, sid)
    assert answer["interrupted"] is True and answer["content"] != "echo: a b c d e f g h i j"


async def test_async_a_stream_closed_while_its_request_is_sent_closes_its_answer(daemon):
    """aclose() from another task while the first step still sends the request: the answer that came after it
    was kept open, its connection with it (and a streamed answer's generation went on)."""
    async with daemon.aclient() as ac:
        events = ac.events(reconnect=False)
        stepping = asyncio.create_task(events.__anext__())
        await eventually(lambda: _awaiting(stepping, "_begin"), interval=0, what="the request on its way")
        await events.aclose()
        try:
            await asyncio.wait_for(stepping, 10)
        except StopAsyncIteration:
            pass
        assert events.resp is not None and events.resp.closed
