"""Connections to the daemon's socket that never finish a request (send nothing, half a request line, half
the headers, the headers a byte at a time, or a body promised and never sent) are closed within
connection_idle_timeout (or about it), so that they cannot hold the daemon's file descriptors for good; a
long-lived legitimate connection (the event stream, quiet for longer than that) is not cut."""

from __future__ import annotations

import contextlib
import select
import socket
import time

import pytest

from conftest import raw_post, started_with, started_with_provider
from servers.openai_server import Faults, Provider, serve_threaded
from waiting import wait_for

IDLE = 1.0  # connection_idle_timeout in these tests' config.toml (seconds; the least it takes)
MARGIN = 8.0  # seconds past it the close may take on a loaded machine


def _closed(sock: socket.socket) -> bool:
    """Whether the daemon closed `sock` (EOF read, or reset); what it answered before is dropped."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def _read_until(sock: socket.socket, marker: bytes, what: str, within: float = 30) -> bytes:
    """What `sock` reads until `marker` is in it; fails if the daemon closes it first (`what` was cut)."""
    got = b""
    deadline = time.monotonic() + within
    while marker not in got:
        assert time.monotonic() < deadline, got
        if select.select([sock], [], [], 0.5)[0]:
            chunk = sock.recv(65536)
            assert chunk, f"{what} was cut: {got!r}"
            got += chunk
    return got


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    return s


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"GET /v1/stat",
        b"GET /v1/status HTTP/1.1\r\nHost: loc",
    ],
    ids=["nothing", "half-a-request-line", "half-the-headers"],
)
def test_a_request_never_finished_is_closed(make_daemon, sent):
    d = started_with(make_daemon, connection_idle_timeout=IDLE)
    s = _connect(d.socket)
    try:
        s.sendall(sent)
        wait_for(lambda: _closed(s), timeout=IDLE + MARGIN, what="the unfinished request's connection closed")
    finally:
        s.close()
    assert d.client().status()["pid"] == d.proc.pid


def test_a_body_never_finished_is_answered_408_and_closed(make_daemon):
    """Headers that promise a body, then half of it: the handler waited for the rest for good, holding the
    connection (aiohttp's idle timer does not run while a handler does). Now the body must be whole within
    connection_idle_timeout; the 408 names it, and the connection is closed: not kept for another request once
    the rest of the body arrives (sent after the 408, so aiohttp's lingering read of what is left, which holds a
    connection whose body never ends up to 10 s, ends at once)."""
    d = started_with(make_daemon, connection_idle_timeout=IDLE)
    s = _connect(d.socket)
    try:
        half = b'{"name": '
        s.sendall(
            b"POST /v1/sessions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200\r\n\r\n" + half
        )
        wait_for(lambda: select.select([s], [], [], 0)[0], timeout=IDLE + MARGIN, what="the daemon's answer")
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"request_timeout" in answer and b"connection_idle_timeout" in answer, answer
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # (closed already: as good)
            s.sendall(b" " * (200 - len(half)))  # the body's rest, late: the connection is not kept for more
        wait_for(lambda: _closed(s), timeout=MARGIN, what="the stalled body's connection closed")
    finally:
        s.close()
    c = d.client()
    assert c.status()["pid"] == d.proc.pid
    assert c.list_sessions()["sessions"] == []  # the half-sent session was not made


def test_headers_trickled_a_byte_at_a_time_are_closed(make_daemon):
    """Slowloris: each byte resets no timer, so the connection is closed about connection_idle_timeout after
    it was made however steadily it trickles."""
    d = started_with(make_daemon, connection_idle_timeout=IDLE)
    s = _connect(d.socket)
    head = b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n" + b"X-Pad: " + b"a" * 10_000
    began = time.monotonic()
    try:
        for i, byte in enumerate(head):
            if _closed(s):
                break
            try:
                s.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            # the pace of the trickle, not a wait for anything: a byte each 0.2 s
            select.select([s], [], [], 0.2)
            assert time.monotonic() - began < IDLE + MARGIN, f"still open after {i + 1} bytes trickled"
    finally:
        s.close()


def test_an_event_stream_quiet_longer_than_the_idle_timeout_is_kept(make_daemon):
    d = started_with(make_daemon, connection_idle_timeout=IDLE, event_keepalive=60)
    c = d.client()
    s = _connect(d.socket)
    try:
        s.sendall(b"GET /v1/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        wait_for(lambda: select.select([s], [], [], 0)[0], what="the event stream's start")
        start = s.recv(65536)
        assert start.startswith(b"HTTP/1.1 200"), start
        # quiet for three idle timeouts: nothing may arrive (no close either)
        assert not select.select([s], [], [], 3 * IDLE)[0], s.recv(65536)
        sid = c.create_session(name="after the quiet")["id"]
        _read_until(s, sid.encode(), "the event stream")
    finally:
        s.close()


def test_a_streamed_answer_quiet_longer_than_the_idle_timeout_is_kept(make_daemon):
    """A model that pauses longer than connection_idle_timeout between its words: the app's streamed answer
    is not cut (the idle timeout closes a connection with no whole request, never one being answered)."""
    p, server = serve_threaded(Provider(faults=Faults(delay=2 * IDLE)))  # the fault itself: slow words
    try:
        d = started_with_provider(
            make_daemon, f"http://127.0.0.1:{server.port}/v1", connection_idle_timeout=IDLE, default_provider="loop"
        )
        sid = d.client().create_session(model="echo-1")["id"]
        s = raw_post(d.socket, f"/v1/sessions/{sid}/complete", {"content": "one two three", "stream": True})
        try:
            got = _read_until(s, b"event: message", "the streamed answer")
        finally:
            s.close()
        assert got.startswith(b"HTTP/1.1 200"), got
        assert b"three" in got.split(b"event: message", 1)[1], got
    finally:
        server.stop()
