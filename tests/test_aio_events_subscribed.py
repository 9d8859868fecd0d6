"""AsyncClient's change events as Client's: subscribed when the app has them (Client.events() and
event_stream() are subscribed when they return; AsyncClient's when awaited, or entered with `async with`),
so that a change the app makes next is among them, not lost to a subscription still on its way."""

from __future__ import annotations

import asyncio

from sessiond.client import Client
from waiting import eventually


async def _appended(events, message: dict) -> dict:
    """The event announcing `message`'s append (missed, had the subscription come after it: a timeout)."""

    async def first() -> dict:
        async for ev in events:
            if ev["type"] == "messages.appended" and message["id"] in ev.get("ids", ()):
                return ev
        raise AssertionError("the stream ended")

    return await asyncio.wait_for(first(), 10)


async def reading_events(ac, sid: str, reconnect: bool) -> tuple:
    """(events(), a task iterating them), once that task has read the event of an append to `sid`."""
    events = await ac.events(reconnect=reconnect)
    got: list[dict] = []

    async def read() -> None:
        async for ev in events:
            got.append(ev)

    reading = asyncio.create_task(read())
    m = await ac.append(sid, "user", f"hi {reconnect}")
    await eventually(lambda: any(m["id"] in ev.get("ids", ()) for ev in got), what="the append's event read")
    return events, reading


def test_the_blocking_clients_events_are_subscribed_when_they_return(daemon):
    with daemon.client() as c:
        sid = c.create_session(name="s")["id"]
        with c.events() as events:
            m = c.append(sid, "user", "hi")
            next(ev for ev in events if ev["type"] == "messages.appended" and m["id"] in ev["ids"])


async def test_async_events_awaited_are_subscribed_before_the_next_change(daemon):
    sid = Client(daemon.home).create_session(name="s")["id"]
    async with daemon.aclient() as ac:
        events = await ac.events()
        m = await ac.append(sid, "user", "hi")  # made once subscribed: seen
        assert (await _appended(events, m))["id"] == events.last_event_id
        await events.aclose()
        async with ac.events() as events:  # entered: subscribed too
            await _appended(events, await ac.append(sid, "user", "again"))


async def test_async_event_stream_is_one_stream_subscribed_when_awaited_as_the_blocking_ones(daemon):
    sid = Client(daemon.home).create_session(name="s")["id"]
    async with daemon.aclient() as ac:
        stream = await ac.event_stream()
        ev = await _appended(stream, await ac.append(sid, "user", "hi"))
        assert stream.last_event_id == ev["id"]
        await stream.aclose()
        resumed = await ac.event_stream(ev["id"])  # after that event
        await _appended(resumed, await ac.append(sid, "user", "next"))
        await resumed.aclose()
        assert [x async for x in resumed] == []  # closed: the iteration is over


def test_the_blocking_event_stream_is_a_context_manager_as_the_others(daemon):
    """`with c.event_stream() as s` closes its connection at the end, as events(), complete_stream() and
    AsyncClient's streams (`async with`) do."""
    with daemon.client() as c:
        sid = c.create_session(name="s")["id"]
        with c.event_stream() as stream:
            m = c.append(sid, "user", "hi")
            next(ev for ev in stream if ev["type"] == "messages.appended" and m["id"] in ev["ids"])
        assert list(stream) == []  # closed: nothing more


async def test_async_events_end_when_their_client_is_closed(daemon):
    """AsyncClient.close() (an app leaving its `async with`) while a task iterates its events(): with reconnect,
    the iteration took the closed connection for a dropped one and went on, on a new aiohttp session opened
    after close() that nothing closed. It ends now, as without reconnect; a later events() opens anew."""
    sid = Client(daemon.home).create_session(name="s")["id"]
    ac = daemon.aclient()
    for reconnect in (False, True):
        events, reading = await reading_events(ac, sid, reconnect)
        await ac.close()
        await asyncio.wait_for(reading, 10)  # ended, not resumed
        assert ac._session is None and ac._events_session is None, reconnect  # nothing opened after close()
        await events.aclose()
    async with ac:  # a client closed is used again: a new stream
        await _appended(await ac.events(), await ac.append(sid, "user", "again"))
