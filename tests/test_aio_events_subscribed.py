"""AsyncClient's change events as Client's: subscribed when the app has them (Client.events() and
event_stream() are subscribed when they return; AsyncClient's when awaited, or entered with `async with`),
so that a change the app makes next is among them, not lost to a subscription still on its way."""

from __future__ import annotations

import asyncio

from sessiond.client import Client


async def _first_change(events, sid: str) -> dict:
    async def first() -> dict:
        async for ev in events:
            if ev.get("session") == sid:
                return ev
        raise AssertionError("the stream ended")

    return await asyncio.wait_for(first(), 10)


def test_the_blocking_clients_events_are_subscribed_when_they_return(daemon):
    with daemon.client() as c:
        sid = c.create_session(name="s")["id"]
        with c.events() as events:
            c.append(sid, "user", "hi")
            assert next(ev for ev in events if ev.get("session") == sid)["type"] == "messages.appended"


async def test_async_events_awaited_are_subscribed_before_the_next_change(daemon):
    sid = Client(daemon.home).create_session(name="s")["id"]
    async with daemon.aclient() as ac:
        events = await ac.events()
        await ac.append(sid, "user", "hi")  # made once subscribed: the first change seen
        assert (await _first_change(events, sid))["type"] == "messages.appended"
        assert events.last_event_id is not None
        await events.aclose()
        async with ac.events() as events:  # entered: subscribed too
            await ac.append(sid, "user", "again")
            ev = await _first_change(events, sid)
            assert ev["type"] == "messages.appended"


async def test_async_event_stream_is_one_stream_subscribed_when_awaited_as_the_blocking_ones(daemon):
    sid = Client(daemon.home).create_session(name="s")["id"]
    async with daemon.aclient() as ac:
        stream = await ac.event_stream()
        await ac.append(sid, "user", "hi")
        ev = await _first_change(stream, sid)
        assert ev["type"] == "messages.appended" and stream.last_event_id == ev["id"]
        await stream.aclose()
        resumed = await ac.event_stream(ev["id"])  # after that event: the next change first
        await ac.append(sid, "user", "next")
        assert (await _first_change(resumed, sid))["type"] == "messages.appended"
        await resumed.aclose()
        assert [x async for x in resumed] == []  # closed: the iteration is over
