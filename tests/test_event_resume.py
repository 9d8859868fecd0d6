"""Resuming GET /v1/events: every event has an id (RUN-SEQ); a stream opened with Last-Event-ID (or
last_event_id) gets the events after it first, exactly and in order, or one events.lost event when the
daemon no longer has them (another run, or too old); the clients' events() resume by themselves."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

from conftest import UnixHTTP, events_route, eventually, wait_for
from sessiond.client import AsyncClient, Client, ClientError
from unixproxy import UnixProxy, pipe

SYNC = ("sync.", "progress")  # the sync worker's events, whose number a test does not choose


class Reader:
    """A thread reading an iterator of events into .seen until it ends."""

    def __init__(self, events):
        self.seen: list[dict] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(events,), daemon=True)
        self.thread.start()

    def _run(self, events) -> None:
        try:
            for ev in events:
                self.seen.append(ev)
        except BaseException as exc:
            self.error = exc

    def wait(self, pred, what: str) -> dict:
        return wait_for(lambda: next((ev for ev in list(self.seen) if pred(ev)), None), timeout=20, what=what)


def _seq(ev: dict) -> int:
    return int(ev["id"].split("-")[1])


def _changes(seen: list[dict]) -> list[tuple]:
    return [(ev["type"], ev.get("session"), tuple(ev.get("ids") or ())) for ev in seen if not _sync(ev)]


def _sync(ev: dict) -> bool:
    return ev["type"].startswith(SYNC)


def _get(sock: str, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    c = UnixHTTP(sock, timeout=10)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    data = r.read() if r.status != 200 else r.readline() + r.readline() + r.readline() + r.readline()
    c.close()
    return r.status, data


def test_a_resumed_stream_gets_exactly_the_missed_events_in_order(daemon):
    c = daemon.client()
    watcher = c.event_stream()  # connected throughout: what the resumed stream must have missed
    everything = Reader(watcher)
    first = c.event_stream()
    sid = c.create_session(name="before")["id"]
    for ev in first:
        if ev.get("session") == sid:
            break
    last = ev["id"]
    assert first.last_event_id == last and last.count("-") == 1
    first.close()
    # meanwhile, with that stream gone
    later = c.create_session(name="meanwhile")["id"]
    appended = [c.append(later, "user", f"m{i}")["id"] for i in range(3)]
    batch = c.append_many(later, [{"role": "user", "content": "b"}] * 3)["ids"]
    resumed = Reader(c.event_stream(last))
    end = c.create_session(name="end")["id"]
    for r in (everything, resumed):
        r.wait(lambda ev: ev.get("session") == end, "the last change's event")
    watcher.close()

    def upto_end(seen: list[dict]) -> list[dict]:
        return seen[: next(i for i, ev in enumerate(seen) if ev.get("session") == end) + 1]

    i = next(i for i, ev in enumerate(everything.seen) if ev["id"] == last)
    expected = upto_end(everything.seen[i + 1 :])
    got = upto_end(resumed.seen)
    assert got == expected  # every event, the sync worker's too, once each, in order
    assert [_seq(ev) for ev in got] == list(range(_seq(got[0]), _seq(got[0]) + len(got))) and _seq(got[0]) == (
        int(last.split("-")[1]) + 1
    )
    assert _changes(got)[:5] == [
        ("session.created", later, ()),
        *(("messages.appended", later, (m,)) for m in appended),
        ("messages.appended", later, tuple(batch)),
    ]


def test_an_id_from_before_a_restart_gets_events_lost_first_then_live_events(daemon):
    c = daemon.client()
    stream = c.event_stream()
    sid = c.create_session(name="before")["id"]
    last = next(ev for ev in stream if ev.get("session") == sid)["id"]
    stream.close()
    daemon.restart()
    c = daemon.client()
    resumed = Reader(c.event_stream(last))
    wait_for(lambda: resumed.seen, timeout=20, what="the first event")
    lost = resumed.seen[0]
    assert lost["type"] == "events.lost" and lost["reason"] == "restarted" and lost["last_event_id"] == last
    assert "another run of the daemon" in lost["message"]
    assert lost["id"].split("-")[0] != last.split("-")[0]
    after = c.create_session(name="after")["id"]
    got = resumed.wait(lambda ev: ev.get("session") == after, "a change after the restart")
    assert _seq(got) > _seq(lost)
    assert [ev["type"] for ev in resumed.seen].count("events.lost") == 1


def test_a_bad_last_event_id_is_a_400_that_says_what_an_id_is(daemon):
    c = daemon.client()
    position = _get(daemon.socket, "/v1/events")
    assert position[0] == 200 and position[1].startswith(b": sessiond events\n\nid: "), position
    for path, headers in (
        ("/v1/events", {"Last-Event-ID": "garbage"}),
        ("/v1/events?last_event_id=12", {}),
        ("/v1/events?last_event_id=abcdefabcdef-1&last_event_id=abcdefabcdef-2", {}),
    ):
        status, body = _get(daemon.socket, path, headers)
        assert status == 400, (path, headers, body)
        assert b"bad_parameter" in body and b"last_event_id" in body, body
    # an id of this run that is still to come names no event the daemon sent
    stream = c.event_stream()
    sid = c.create_session(name="x")["id"]
    run, seq = next(ev for ev in stream if ev.get("session") == sid)["id"].split("-")
    stream.close()
    status, body = _get(daemon.socket, "/v1/events", {"Last-Event-ID": f"{run}-{int(seq) + 1000}"})
    assert status == 400 and b"names no event" in body, body
    # the query parameter is taken as the header is; a parameter the route does not name is still refused
    assert _get(daemon.socket, f"/v1/events?last_event_id={run}-{seq}")[0] == 200
    assert _get(daemon.socket, "/v1/events?last_id=x")[0] == 400
    doc = c.openapi()["paths"]["/v1/events"]["get"]
    assert {p["name"] for p in doc["parameters"]} == {"last_event_id", "Last-Event-ID"}


def test_an_id_older_than_the_kept_events_gets_events_lost(daemon):
    """The kept events are bounded by their bytes (event_backlog's and 2 MiB more: 3 MiB by default; a batch of
    100,000 messages' event is ~2.7 MB): an id before the events they pushed out is too old."""
    c = daemon.client()
    stream = c.event_stream()
    sid = c.create_session(name="old")["id"]
    last = next(ev for ev in stream if ev.get("session") == sid)["id"]
    stream.close()
    c.append(sid, "user", "one")
    for _ in range(2):
        c.append_many(sid, [{"role": "user", "content": "x"}] * 100_000)
    resumed = Reader(c.event_stream(last))
    wait_for(lambda: resumed.seen, timeout=20, what="the first event")
    lost = resumed.seen[0]
    assert (lost["type"], lost["reason"], lost["last_event_id"]) == ("events.lost", "too_old", last)
    assert "no longer kept" in lost["message"]


class CutProxy(UnixProxy):
    """A Unix-socket proxy in front of a daemon whose connections can be cut, and new ones held, at will."""

    def __init__(self, upstream: str):
        self.open = threading.Event()
        self.open.set()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        super().__init__(upstream)

    def before_connect(self) -> None:
        self.open.wait()

    def handle(self, a: socket.socket, b: socket.socket) -> None:
        self.pairs.append((a, b))
        for x, y in ((a, b), (b, a)):
            threading.Thread(target=self._pipe, args=(x, y), daemon=True).start()

    _pipe = staticmethod(pipe)

    def cut(self) -> None:
        """Cut every connection; hold new ones until resume()."""
        self.open.clear()
        for a, b in self.pairs:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.pairs.clear()

    def resume(self) -> None:
        self.open.set()


def test_the_clients_events_resume_by_themselves_after_a_dropped_connection(daemon):
    c = daemon.client()
    proxy = CutProxy(daemon.socket)
    try:
        events = Client(socket=proxy.path).events()
        reader = Reader(events)
        wait_for(lambda: proxy.pairs, timeout=10, what="the stream's connection")
        sid = c.create_session(name="resume")["id"]
        reader.wait(lambda ev: ev.get("session") == sid, "the first change")
        proxy.cut()
        missed = [c.append(sid, "user", f"m{i}")["id"] for i in range(3)]
        proxy.resume()
        end = c.create_session(name="end")["id"]
        reader.wait(lambda ev: ev.get("session") == end, "a change after the connection came back")
        events.close()
    finally:
        proxy.close()
    seen = reader.seen
    assert reader.error is None, reader.error
    assert [_seq(ev) for ev in seen] == list(range(_seq(seen[0]), _seq(seen[0]) + len(seen)))  # none missed, none twice
    assert _changes(seen) == [
        ("session.created", sid, ()),
        *(("messages.appended", sid, (m,)) for m in missed),
        ("session.created", end, ()),
    ]


async def test_the_async_clients_events_go_on_across_a_restart_with_events_lost(daemon):
    async with AsyncClient(daemon.home) as c, AsyncClient(daemon.home) as writer:
        seen: list[dict] = []
        it = c.events()
        task = asyncio.create_task(_collect(it, seen))

        async def probe() -> bool:  # a change made before the subscription took hold is not seen: again
            sid = (await writer.create_session(name="before"))["id"]

            def created() -> bool:  # its creation's event (its push's may come after a subscription that missed it)
                return any(ev.get("session") == sid and ev["type"] == "session.created" for ev in seen)

            try:
                await eventually(lambda: task.done() or created(), timeout=1)
            except AssertionError:  # missed: the subscription was not there yet
                return False
            return created()

        await eventually(probe, timeout=20, what="the stream's subscription")
        await asyncio.to_thread(daemon.restart)
        await eventually(lambda: task.done() or any(ev["type"] == "events.lost" for ev in seen), timeout=30)
        after = (await writer.create_session(name="after"))["id"]
        await eventually(lambda: task.done() or any(ev.get("session") == after for ev in seen), timeout=20)
        task.cancel()
        await asyncio.wait({task})
        await it.aclose()
    changes = [ev for ev in seen if not _sync(ev)]
    i = next(i for i, ev in enumerate(changes) if ev["type"] == "events.lost")
    assert {ev["type"] for ev in changes[:i]} == {"session.created"}, changes
    assert [(ev["type"], ev.get("session")) for ev in changes[i + 1 :]] == [("session.created", after)], changes
    lost = changes[i]
    j = seen.index(lost)
    assert lost["reason"] == "restarted" and lost["last_event_id"] == seen[j - 1]["id"], seen[j - 1 : j + 1]


async def _collect(it, seen: list) -> None:
    async for ev in it:
        seen.append(ev)


async def test_the_events_kept_stop_some_time_after_the_last_subscriber_left(tmp_path):
    """Nobody subscribed for KEEP_FOR seconds: no event is kept (publishing costs one test again), and a
    resume from before then is told events were lost, even if none came: it cannot be known."""
    path = str(tmp_path / "s.sock")
    async with events_route(path) as events:
        events._keep_for = 0.2
        q, first = events.subscribe()
        assert first == []
        events.publish({"type": "session.created", "session": "s1"})
        last = events.position()  # the id of the event just published
        assert q.queue.get_nowait().startswith(f"id: {last}\n".encode())
        events.unsubscribe(q)
        events.publish({"type": "session.created", "session": "s2"})  # within KEEP_FOR: kept
        q, first = events.subscribe(_parse(last))
        assert [_data(ev)["session"] for ev in first] == ["s2"]
        events.unsubscribe(q)
        await asyncio.sleep(0.3)  # past KEEP_FOR (0.2 s): the point of the test is that time passing
        assert not events._keeping and not events._kept
        q, first = events.subscribe(_parse(last))
        assert [(_data(ev)["type"], _data(ev)["reason"]) for ev in first] == [("events.lost", "too_old")]
        events.unsubscribe(q)


def _parse(event_id: str) -> tuple[str, int]:
    run, seq = event_id.split("-")
    return run, int(seq)


def _data(sent: bytes) -> dict:
    """An event as a stream sends it (what a resume sends first), its data."""
    return json.loads(sent.split(b"\ndata: ", 1)[1])


def test_a_client_that_cannot_reach_the_daemon_again_says_so(daemon):
    """events() with the daemon gone for good: the last connection error, after retry_for seconds."""
    reader = Reader(daemon.client().events(retry_for=0.5))
    sid = daemon.client().create_session(name="x")["id"]
    reader.wait(lambda ev: ev.get("session") == sid, "the stream's first event")
    daemon.stop()
    wait_for(lambda: not reader.thread.is_alive(), timeout=20, what="the iteration's end")
    assert isinstance(reader.error, ClientError) and "no sessiond daemon answers" in str(reader.error), reader.error


async def test_events_kept_while_nobody_subscribes_are_not_serialized_until_a_resume_asks(monkeypatch):
    """For KEEP_FOR seconds after the last subscriber left, every event is kept for a resume: each was made
    into the bytes a stream sends as it was published, with nobody to send it to (a batch append's event of
    100,000 ids: ~60 ms of the event loop, where keeping it costs ~0.3 ms). Kept as it is now, it is made
    into those bytes only if a resume asks for it, which gets the same events."""
    from sessiond.daemon import events as module

    made: list = []
    real = module.sse
    monkeypatch.setattr(module, "sse", lambda ev: made.append(ev["id"]) or real(ev))
    events = module.Events()
    q, _ = events.subscribe()
    events.publish({"type": "session.created", "session": "s0"})  # sent to its subscriber: made once
    last = events.position()
    events.unsubscribe(q)
    made.clear()
    ids = [f"s1-{i}" for i in range(1000)]
    for i in range(3):
        events.publish({"type": "messages.appended", "session": "s1", "n": i, "ids": ids})
    assert made == [], "events serialized with nobody subscribed"
    resumed, first = events.subscribe(_parse(last))
    events.unsubscribe(resumed)
    assert [(_data(ev)["n"], _data(ev)["ids"]) for ev in first] == [(i, ids) for i in range(3)]
    assert [_data(ev)["id"] for ev in first] == made and len(made) == 3
