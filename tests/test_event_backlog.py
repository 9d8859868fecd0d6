"""An event subscriber that stops reading, its connection kept open: the daemon held every event that came for
it until its connection had been full for connection_idle_timeout (75 s by default), or 10,000 events,
whatever their size (measured: a subscriber that read nothing while 300 appends of 1,000 messages ran held ~16
MB more than the daemon without it, ~80 KB an event, growing with every append). Now its stream holds at most
config.toml's event_backlog bytes unsent (1 MiB by default): past it the subscriber is dropped (logged,
counted in /v1/status), told why if it reads again within event_keepalive seconds, else hung up on, and a
resume after the last event it read misses nothing: the clients' events() iterators (blocking and async) go on
across the drop by themselves."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import threading

import pytest

from asking import logged
from conftest import started_with, write_config
from sessiond.client import Client
from sessiond.daemon.events import Events
from waiting import eventually, wait_for

BATCH = 1000  # messages an append names in its event (~30 KB of it)
APPENDS = 100  # ~3 MB of events: more than the backlog and every buffer of the connection together
BACKLOG = 1 << 20
# The drop's outcome for an app's stream (told why, hung up on, resumed) is the same at any backlog: those tests
# run at the smallest config.toml takes, filled by ~20 appends of the 100 (a daemon that never drops the
# stream gets the 100 and still fails them); the drop at the default's and at 4 MiB is the first test's.
SMALL_BACKLOG = 1 << 16


def _appended(c: Client, sid: str, appends: int = APPENDS, batch: int = BATCH) -> list[str]:
    """The ids of the messages appended: `appends` appends of `batch` messages at most, none after the one at
    which the daemon dropped its subscriber (what each costs the daemon is most of this file's CPU: ~half of the
    appends are past the backlog and the connection's buffers). A daemon that never drops it gets them all."""
    ids: list[str] = []
    for _ in range(appends):
        ids += c.append_many(sid, [{"role": "user", "content": "x"} for _ in range(batch)])["ids"]
        if c.status()["events"]["dropped"]:
            break
    return ids


def _subscribed(d) -> tuple[Client, str, socket.socket]:
    """A client of daemon `d`, a new session's id, and a raw connection subscribed to GET /v1/events."""
    c = d.client()
    sid = c.create_session(name="s")["id"]
    s = socket.socket(socket.AF_UNIX)
    s.connect(d.socket)
    s.sendall(b"GET /v1/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
    wait_for(lambda: c.status()["events"]["subscribers"] == 1, what="the subscriber counted")
    return c, sid, s


def _appended_ids(events, got: list[str], count: int) -> list[str]:
    """`got` and the message ids of the appends that `events` (an iterator of events) tells, until `count`
    of them; none of its events may be events.lost."""
    for ev in events:
        assert ev["type"] != "events.lost"
        if ev["type"] == "messages.appended":
            got += ev["ids"]
        if len(got) >= count:
            break
    return got


def _hung_up(s: socket.socket) -> None:
    """Waits for the daemon to hang up on connection `s` (event_keepalive 1 s, and a loaded machine's margin)."""
    hangup = select.poll()
    hangup.register(s, select.POLLHUP)
    wait_for(lambda: hangup.poll(0), timeout=1 + 8, what="the daemon hanging up on the dropped subscriber")


def _read_to_end(s: socket.socket) -> bytes:
    """What the stream sent, to its end (the chunked answer's last chunk)."""
    s.settimeout(30)
    raw = b""
    while not raw.endswith(b"\r\n0\r\n\r\n"):
        more = s.recv(1 << 20)
        assert more, "the connection closed before the stream's end"
        raw += more
    return raw


def _unchunked(body: bytes) -> bytes:
    out = []
    while body:
        size, _, body = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out.append(body[:n])
        body = body[n + 2 :]
    return b"".join(out)


def _events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


# (event_backlog, appends, messages each): its default, and 4 MiB, over the ~3 MB of events that the 100,000
# message ids a resume once kept at most came to (a subscriber dropped past it resumed with events.lost); the
# appends ~5.7 MB of events, more than the backlog and the connection's buffers, less than is kept (6 MiB)
BACKLOGS = [(BACKLOG, APPENDS, BATCH), (4 << 20, 21, 10 * BATCH)]


@pytest.mark.parametrize(("backlog", "appends", "batch"), BACKLOGS, ids=["default", "4MiB"])
def test_a_subscriber_that_stops_reading_is_dropped_past_the_backlog_and_resumes_missing_nothing(
    make_daemon, backlog, appends, batch
):
    settings = {} if backlog == BACKLOG else {"event_backlog": backlog}
    d = started_with(make_daemon, **settings)  # connection_idle_timeout: 75 s, its default
    c, sid, s = _subscribed(d)
    try:
        ids = _appended(c, sid, appends, batch)  # while the subscriber reads nothing
        # dropped at the append that took it over the backlog, not 75 s after its connection filled
        wait_for(lambda: c.status()["events"]["subscribers"] == 0, timeout=5, what="the subscriber dropped")
        status = c.status()["events"]
        assert status["dropped"] == 1 and status["held"] == 0 and status["backlog"] == backlog
        text = _unchunked(_read_to_end(s).partition(b"\r\n\r\n")[2]).decode()
    finally:
        s.close()
    read = _events(text)
    assert read, "the events written before the drop are read"
    seqs = [int(ev["id"].split("-")[1]) for ev in read]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no event skipped before the drop"
    assert f"held more than {backlog:,} bytes" in text.rsplit("\n\n", 2)[-2]
    got = [i for ev in read if ev["type"] == "messages.appended" for i in ev["ids"]]
    assert len(got) < len(ids)
    # resumed after the last event read: the rest, none lost
    stream = c.event_stream(read[-1]["id"])
    try:
        assert _appended_ids(stream, got, len(ids)) == ids
    finally:
        stream.close()
    assert [e["level"] for e in logged(d, "events.dropped")] == ["warning"]


def _parsed(sent: bytes) -> dict:
    """An event as a stream sends it (what a resume sends first), its data."""
    return json.loads(sent.split(b"\ndata: ", 1)[1])


async def test_a_subscriber_dropped_at_the_largest_event_backlog_resumes_missing_nothing():
    """At the largest event_backlog config.toml takes (64 MiB), a subscriber that reads nothing is dropped once
    its stream holds that much; a resume after the last event it read gets every event after it, none lost."""
    events = Events(backlog=1 << 26)
    q, _ = events.subscribe()  # its app reads the first event, then nothing
    events.publish({"type": "session.created", "session": "s"})
    last = q.queue.get_nowait().split(b"\n", 1)[0].removeprefix(b"id: ").decode()
    ids = [f"{i:016x}-{i}" for i in range(BATCH * 10)]  # one append's batch, ~270 KB an event
    n = 0
    while not events.dropped:
        events.publish({"type": "messages.appended", "session": "s", "n": n, "ids": ids})
        n += 1
    assert q.queue.qsize() == 1 and q.held == 0  # (its events let go)
    run, seq = last.split("-")
    resumed, first = events.subscribe((run, int(seq)))
    events.unsubscribe(resumed)
    assert [_parsed(item).get("n") for item in first] == list(range(n))


@pytest.mark.parametrize("keepalive", [15, 1], ids=["told-why", "hung-up-on"])
def test_the_clients_events_go_on_across_a_drop_missing_nothing(make_daemon, keepalive):
    """An app iterating Client.events() that pauses (busy elsewhere) while appends run: its stream is dropped
    (and, with event_keepalive 1, hung up on too, the app still not reading a second after the drop), and the
    iterator resumes after the last event it read, every message's event in order, none lost."""
    d = started_with(make_daemon, event_keepalive=keepalive, event_backlog=SMALL_BACKLOG)
    c = d.client()
    sid = c.create_session(name="s")["id"]
    events = c.events()
    try:
        ids = _appended(c, sid)  # the app reads nothing meanwhile
        wait_for(lambda: c.status()["events"]["dropped"] == 1, timeout=5, what="the stream dropped")
        if keepalive == 1:  # the app reads nothing until the daemon has hung up
            _hung_up(events._stream._conn.sock)
        done = threading.Timer(60, events.close)  # a hang fails, not blocks
        done.start()
        assert _appended_ids(events, [], len(ids)) == ids
        done.cancel()
    finally:
        events.close()


@pytest.mark.parametrize("value", [0, 1000, -1, 1.5, True, "1MB", 1 << 27])
def test_a_bad_event_backlog_is_refused_at_start(make_daemon, value):
    d = make_daemon()
    write_config(d.home, event_backlog=value)
    with pytest.raises(RuntimeError, match="'event_backlog' must be a whole number of bytes"):
        d.start()


@pytest.mark.parametrize("keepalive", [15, 1], ids=["told-why", "hung-up-on"])
async def test_the_async_clients_events_go_on_across_a_drop_missing_nothing(make_daemon, keepalive):
    d = started_with(make_daemon, event_keepalive=keepalive, event_backlog=SMALL_BACKLOG)
    c, ac = d.client(), d.aclient()
    sid = c.create_session(name="s")["id"]
    events = ac.events()
    try:
        first = asyncio.ensure_future(anext(events))  # subscribed once the stream's head is read
        await eventually(lambda: c.status()["events"]["subscribers"] == 1, what="the subscriber counted")
        ids = await asyncio.to_thread(_appended, c, sid)  # the app reads nothing meanwhile
        await eventually(lambda: c.status()["events"]["dropped"] == 1, timeout=5, what="the stream dropped")
        if keepalive == 1:  # the app reads nothing until the daemon has hung up
            await eventually(lambda: logged(d, "events.hung_up"), timeout=1 + 8, what="the stream hung up on")
        got = [] if (ev := await first)["type"] != "messages.appended" else list(ev["ids"])
        async with asyncio.timeout(60):
            async for ev in events:
                assert ev["type"] != "events.lost"
                if ev["type"] == "messages.appended":
                    got += ev["ids"]
                if len(got) >= len(ids):
                    break
    finally:
        await events.aclose()
        await ac.close()
    assert got == ids


def test_a_dropped_subscriber_whose_connection_stays_full_is_hung_up_on_after_event_keepalive(make_daemon):
    """Dropped, the subscriber still reading nothing: its stream could not write even the comment saying why,
    and held its connection, task and the bytes waiting in it until connection_idle_timeout (75 s). Now it is
    hung up on once event_keepalive seconds pass after the drop with its connection still full."""
    d = started_with(make_daemon, event_keepalive=1, event_backlog=SMALL_BACKLOG)  # connection_idle_timeout: 75 s
    c, sid, s = _subscribed(d)
    try:
        _appended(c, sid)
        wait_for(lambda: c.status()["events"]["dropped"] == 1, timeout=5, what="the subscriber dropped")
        _hung_up(s)
    finally:
        s.close()
    assert [e["level"] for e in logged(d, "events.hung_up")] == ["info"]
