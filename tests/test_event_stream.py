"""The blocking client's event stream (GET /v1/events): close() from any thread ends the iteration, quietly."""

from __future__ import annotations

import asyncio
import threading
import time

from conftest import events_route
from sessiond.client import Client


def test_a_stream_closed_between_two_reads_ends_its_iteration(daemon):
    c = Client(daemon.home)
    stream = c.event_stream()
    sid = c.create_session(name="events")["id"]
    it = iter(stream)
    first = next(it)  # the create's event
    assert first.get("session") == sid
    stream.close()  # while the reader is between two reads (it was an AttributeError: the response's fp gone)
    assert list(it) == []


def test_a_stream_closed_from_another_thread_wakes_its_reader(daemon):
    c = Client(daemon.home)
    stream = c.event_stream()
    seen: list[dict] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            seen.extend(stream)
        except BaseException as e:  # (what the thread would have died of)
            errors.append(e)

    t = threading.Thread(target=read)
    t.start()
    sid = c.create_session(name="events")["id"]
    stream.close()
    t.join(timeout=10)
    assert not t.is_alive() and errors == []
    assert all(ev.get("session") in (None, sid) for ev in seen)


async def test_a_stream_the_daemon_ends_ends_its_iteration(tmp_path):
    """The daemon ends a subscriber's stream (one 10,000 events behind, daemon/events.py) with the end of
    its chunked body, the connection kept alive: the reader's iteration ends then, not when the daemon
    closes the idle connection (aiohttp's keep-alive: 75 s)."""
    path = str(tmp_path / "s.sock")
    async with events_route(path) as events:
        for read in (
            lambda: list(Client(socket=path).event_stream()),
            lambda: list(Client(socket=path).events(reconnect=False)),
        ):
            reader = asyncio.create_task(asyncio.to_thread(read))
            deadline = time.monotonic() + 10
            while not events._streams:  # subscribed
                assert time.monotonic() < deadline and not reader.done()
                await asyncio.sleep(0.01)
            events.publish({"type": "session.created", "session": "s1"})
            events.close()  # (the daemon's stop; one that fell behind is ended as well, saying why)
            seen = await asyncio.wait_for(reader, 10)
            assert [ev["session"] for ev in seen] == ["s1"]


def test_a_client_sees_which_chat_each_change_touched(daemon):
    """messages.appended names the chat of its ids (a batch's messages may each name their own chat: one
    event per chat, in the batch's order), and a chat made current by `chat new --switch` is announced as
    a switch is (chat.switched), so that a client following the stream knows the current chat."""
    from conftest import wait_for

    c = Client(daemon.home)
    stream = c.event_stream()
    seen: list[dict] = []

    def read() -> None:
        for ev in stream:
            if not ev["type"].startswith("sync."):
                seen.append(ev)

    t = threading.Thread(target=read)
    t.start()
    try:
        sid = c.create_session(name="events")["id"]
        c.create_chat(sid, id="c2")
        c.create_chat(sid, id="c3", switch=True)
        assert c.get_session(sid)["current_chat"] == "c3"
        both = c.append_many(sid, [{"role": "user", "content": "a", "chat": "c2"}, {"role": "user", "content": "b"}])
        only = c.append_many(sid, [{"role": "user", "content": "c", "chat": "main"}])
        wait_for(lambda: any(ev.get("ids") == only["ids"] for ev in seen), timeout=10, what="the last change's event")
    finally:
        stream.close()
        t.join(timeout=10)
    got = [(ev["type"], ev.get("chat"), ev.get("ids")) for ev in seen if ev.get("session") == sid]
    assert got == [
        ("session.created", None, None),
        ("chat.created", "c2", None),
        ("chat.created", "c3", None),
        ("chat.switched", "c3", None),
        ("messages.appended", "c2", both["ids"][:1]),
        ("messages.appended", "c3", both["ids"][1:]),
        ("messages.appended", "main", only["ids"]),
    ], got


async def test_the_clients_streams_pass_over_keep_alive_comments(make_daemon):
    """A stream with no event for event_keepalive seconds is sent a comment (`: keep-alive`): both clients'
    streams read past it to the next event."""
    import socket

    from conftest import started_with
    from waiting import eventually, wait_for

    d = started_with(make_daemon, event_keepalive=1)
    c = d.client()
    stream = c.event_stream()
    async with d.aclient() as ac:
        agen = ac.events(reconnect=False).__aiter__()
        first = asyncio.ensure_future(agen.__anext__())
        await eventually(lambda: c.status()["events"]["subscribers"] == 2, what="both clients subscribed")
        watcher = socket.socket(socket.AF_UNIX)  # subscribed after them: its keep-alives come after theirs
        watcher.settimeout(10)
        watcher.connect(d.socket)
        try:
            watcher.sendall(b"GET /v1/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
            got = b""

            def two_keep_alives() -> bool:
                nonlocal got
                got += watcher.recv(65536)
                return got.count(b": keep-alive\n\n") >= 2

            wait_for(two_keep_alives, timeout=20, what="keep-alive comments sent")
        finally:
            watcher.close()
        sid = c.create_session(name="events")["id"]
        assert next(iter(stream))["session"] == sid
        assert (await asyncio.wait_for(first, 20))["session"] == sid
        await agen.aclose()
    stream.close()
