"""Apps that send requests and leave the answers unread: the daemon hangs up on them once an answer could not
be written for connection_idle_timeout, rather than holding the connection, its handler's task and the
unsent answer for good (a plain HTTP answer, pipelined ones, the event stream), and it serves every other
app meanwhile. An event subscriber that falls too far behind is dropped, told why."""

from __future__ import annotations

import asyncio
import json
import select
import socket

import pytest

from conftest import events_route, raw_post, started_with, started_with_provider
from servers.openai_server import Provider, serve_threaded
from sessiond.daemon.events import BEHIND
from waiting import eventually, wait_for

IDLE = 1.0  # connection_idle_timeout in these tests' config.toml (seconds; the least it takes)
MARGIN = 8.0  # seconds past it the hang-up may take on a loaded machine


def _hung_up(sock: socket.socket, what: str) -> None:
    hangup = select.poll()
    hangup.register(sock, select.POLLHUP)
    wait_for(lambda: hangup.poll(0), timeout=IDLE + MARGIN, what=what)


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()


def _sent_all_it_takes(sock: socket.socket, data: bytes, times: int) -> int:
    """`data` sent up to `times` times, as long as the daemon takes it (the socket not blocking): how many."""
    sock.setblocking(False)
    sent = 0
    pending = b""
    for _ in range(times):
        pending += data
        try:
            while pending:
                pending = pending[sock.send(pending) :]
        except BlockingIOError:
            break
        sent += 1
    return sent


@pytest.mark.parametrize("pipelined", [False, True], ids=["one-large-answer", "many-small-answers"])
def test_an_app_that_reads_no_answer_is_hung_up_on(make_daemon, pipelined):
    """One answer larger than the connection holds (messages of 512 KiB), or many small ones pipelined (each a
    page of messages of 8 KiB): the daemon cannot write it all; after connection_idle_timeout of that it hangs
    up. Another app is served meanwhile."""
    d = started_with(make_daemon, connection_idle_timeout=IDLE)
    c = d.client()
    sid = c.create_session(name="s")["id"]
    size = 8 << 10 if pipelined else 512 << 10
    c.append_many(sid, [{"role": "user", "content": "x" * size} for _ in range(8)])
    s = socket.socket(socket.AF_UNIX)
    s.connect(d.socket)
    try:
        if pipelined:
            assert _sent_all_it_takes(s, _get(f"/v1/sessions/{sid}/messages?limit=1"), 5000) > 100
        else:
            s.sendall(_get(f"/v1/sessions/{sid}/messages?limit=8"))
        assert c.status()["pid"] == d.proc.pid  # others are served meanwhile
        _hung_up(s, "the daemon hanging up on an app that reads no answer")
    finally:
        s.close()
    assert len(c.messages(sid)["messages"]) == 8


def _held(port: int, peer: int) -> bool:
    """Whether a process still holds (by a file descriptor) the loopback TCP connection from `port` to `peer`
    (an abandoned connection is the kernel's: no inode)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) == peer:
                return inode != "0"
    return False


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_openai_listener_hangs_up_on_an_app_that_reads_no_answer(make_daemon, stream):
    """The same on the OpenAI-compatible TCP listener: an answer larger than the connection holds, whole or
    streamed, to an app that reads none of it (its receive buffer small, as a stalled app's fills) is let go
    of: the daemon no longer holds the connection (what it sent is the kernel's to deliver), and a stream's
    generation stops."""
    p, server = serve_threaded(Provider())
    try:
        d = started_with_provider(
            make_daemon,
            f"http://127.0.0.1:{server.port}/v1",
            connection_idle_timeout=IDLE,
            openai_listen="127.0.0.1:0",
        )
        c = d.client()
        sid = c.create_session(model="echo-1")["id"]
        openai = c.status()["openai"]
        key = open(openai["api_key_file"]).read().strip()
        port = int(openai["base_url"].rsplit(":", 1)[1].split("/", 1)[0])
        p.faults.repeat = 1 if stream else 40  # (whole: 8 MB, more than the kernel takes, 4 MiB)
        question = [{"role": "user", "content": "w " * 100_000}]
        raw = json.dumps({"model": "echo-1", "messages": question, "stream": stream})
        s = socket.socket(socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        try:
            s.sendall(
                f"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n"
                f"X-Sessiond-Session: {sid}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(raw)}\r\n\r\n{raw}".encode()
            )
            wait_for(lambda: select.select([s], [], [], 0)[0], timeout=20, what="the answer begun")
            peer = s.getsockname()[1]
            assert _held(port, peer)
            wait_for(lambda: not _held(port, peer), timeout=IDLE + MARGIN, what="the daemon letting the app go")
            if stream:
                wait_for(lambda: p.streams_stopped, timeout=20, what="the provider's stream stopped")
        finally:
            s.close()
    finally:
        server.stop()


def test_the_openai_listener_closes_an_idle_connection(make_daemon):
    """An idle kept-alive connection to the OpenAI-compatible listener is closed after connection_idle_timeout,
    as the socket's are (it was aiohttp's default, an hour: an app that went away held it that long)."""
    d = started_with(make_daemon, connection_idle_timeout=IDLE, openai_listen="127.0.0.1:0")
    openai = d.client().status()["openai"]
    key = open(openai["api_key_file"]).read().strip()
    port = int(openai["base_url"].rsplit(":", 1)[1].split("/", 1)[0])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"GET /openai/v1/models HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
        s.settimeout(IDLE + MARGIN)
        got = b""
        while more := s.recv(1 << 16):  # the answer, then the connection closed by the daemon
            got += more
        assert got.startswith(b"HTTP/1.1 ")  # (409: no provider; any answer will do)


def test_a_stop_does_not_wait_for_an_app_that_reads_no_answer(make_daemon):
    """A daemon stopped while an answer waits for an app that reads none (connection_idle_timeout at its
    default, 75 s): it hangs up on the app a second into the stop and exits cleanly, rather than waiting for
    the timeout (or aiohttp's shutdown timeout, a minute)."""
    import time

    d = started_with(make_daemon)
    c = d.client()
    sid = c.create_session(name="s")["id"]
    c.append_many(sid, [{"role": "user", "content": "x" * (512 << 10)} for _ in range(8)])
    s = socket.socket(socket.AF_UNIX)
    s.connect(d.socket)
    try:
        s.sendall(_get(f"/v1/sessions/{sid}/messages?limit=8"))
        wait_for(lambda: select.select([s], [], [], 0)[0], what="the answer begun")
        began = time.monotonic()
        assert d.stop() == 0
        assert time.monotonic() - began < 10
    finally:
        s.close()


def test_an_event_subscriber_that_stops_reading_is_hung_up_on(make_daemon):
    """A subscriber of GET /v1/events that reads nothing while events come (each naming 4,000 message ids):
    once an event could not be written for connection_idle_timeout, the daemon hangs up."""
    d = started_with(make_daemon, connection_idle_timeout=IDLE)
    c = d.client()
    sid = c.create_session(name="s")["id"]
    s = socket.socket(socket.AF_UNIX)
    s.connect(d.socket)
    try:
        s.sendall(_get("/v1/events"))
        wait_for(lambda: select.select([s], [], [], 0)[0], what="the event stream's start")
        for _ in range(12):  # ~1.7 MB of events: more than the connection holds
            c.append_many(sid, [{"role": "user", "content": "x"} for _ in range(4000)])
        assert c.status()["pid"] == d.proc.pid
        _hung_up(s, "the daemon hanging up on a subscriber that reads nothing")
    finally:
        s.close()
    assert c.stats(session=sid)["messages"] == 48_000


def test_an_event_subscriber_gone_with_no_events_coming_is_let_go_at_the_next_keep_alive(make_daemon):
    """A subscriber of GET /v1/events that closes its connection without reading, no event coming: the
    daemon's handler waits for the next event and writes nothing, so the subscriber (its queue, task and
    connection) was held until the next keep-alive comment, every 15 s, which nothing let an operator set or
    see. The interval is config.toml's event_keepalive now, and /v1/status counts the subscribers."""
    d = started_with(make_daemon, event_keepalive=1)
    c = d.client()
    assert c.status()["events"] == {"subscribers": 0, "keepalive": 1.0, "backlog": 1 << 20, "held": 0, "dropped": 0}
    s = socket.socket(socket.AF_UNIX)
    s.connect(d.socket)
    try:
        s.sendall(_get("/v1/events"))
        wait_for(lambda: c.status()["events"]["subscribers"] == 1, what="the subscriber counted")
    finally:
        s.close()  # gone, its stream's start unread
    wait_for(lambda: c.status()["events"]["subscribers"] == 0, timeout=1 + MARGIN, what="the subscriber let go")


def test_an_app_that_reads_no_streamed_answer_is_hung_up_on_and_the_generation_stopped(make_daemon):
    """A model's answer streamed (POST .../complete with "stream": true) to an app that reads none of it, the
    answer longer than the connection holds (400,000 words): hung up on once a chunk could not be written for
    connection_idle_timeout; the provider's stream is stopped, and the next question is answered."""
    p, server = serve_threaded(Provider())
    try:
        d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", connection_idle_timeout=IDLE)
        c = d.client()
        sid = c.create_session(model="echo-1")["id"]
        # an answer far longer than every buffer between the provider and the daemon can hold (~50 MB of
        # chunks; loopback TCP's grow to several MB): with 100,000 words (~13 MB) a CI run under load saw the
        # provider write it all before the hang-up, its stream ended whole, with nothing left to stop
        s = raw_post(d.socket, f"/v1/sessions/{sid}/complete", {"content": "w " * 400_000, "stream": True})
        try:
            _hung_up(s, "the daemon hanging up on an app that reads no streamed answer")
        finally:
            s.close()
        wait_for(lambda: p.streams_stopped, timeout=20, what="the provider's stream stopped")
        assert c.complete(sid, "again")["content"] == "echo: again"
    finally:
        server.stop()


async def test_a_subscriber_too_far_behind_is_dropped_told_why_and_resumes_missing_nothing(tmp_path):
    """More events come than a subscriber's stream holds unsent (BEHIND, 5,000) before it takes one: it is
    dropped, its events let go; what it reads is the events before the drop with none skipped, then a
    comment saying why, then the end of the stream; a resume after the last of them gets all the rest. (It
    held 10,000, as many as are kept for a resume: a resume after a drop always began with events.lost.)"""
    path = str(tmp_path / "s.sock")
    async with events_route(path) as events:
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(_get("/v1/events"))
        await writer.drain()
        await eventually(lambda: events._queues, what="the subscriber")
        for i in range(BEHIND + 1):  # in one turn of the loop: its stream sends none of them meanwhile
            events.publish({"type": "test.event", "n": i})
        raw = b""
        while not raw.endswith(b"\r\n0\r\n\r\n"):  # the stream's end
            more = await asyncio.wait_for(reader.read(1 << 16), timeout=30)
            assert more, "the connection closed before the stream's end"
            raw += more
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        text = _unchunked(body).decode()
        start = text.split("id: ", 1)[1].split("\n", 1)[0]
        ids = [start] + [json.loads(line[6:])["id"] for line in text.splitlines() if line.startswith("data: ")]
        assert [int(s.split("-")[1]) for s in ids] == list(range(int(start.split("-")[1]), len(ids)))
        assert f"{BEHIND:,} events unsent" in text.rsplit("\n\n", 2)[-2]
        assert not events._queues and not events._streams and events.dropped == 1
        run, seq = ids[-1].split("-")
        q, first = events.subscribe((run, int(seq)))
        events.unsubscribe(q)
        assert [json.loads(ev.split(b"\ndata: ", 1)[1])["n"] for ev in first] == list(range(len(ids) - 1, BEHIND + 1))


def _unchunked(body: bytes) -> bytes:
    out = b""
    while body:
        size, _, body = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out, body = out + body[:n], body[n + 2 :]
    return out
