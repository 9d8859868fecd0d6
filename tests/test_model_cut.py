"""A streamed answer that stops early keeps all of what arrived. A provider that writes part of an answer
and drops the connection at once, while the daemon is busy elsewhere (here: held by a fault hook just
after the first chunk; in use, the question's commit, an app slow to read): everything it wrote reached
the daemon and is recorded, marked interrupted (was: aiohttp raised the connection's failure before the
text it still held, and the answer recorded stopped at what had been read before the cut). And an app
that leaves between the provider's first chunk and the start of the daemon's answer to it: the provider's
stream is closed (its generation stopped) and the chunk's text recorded, marked interrupted (was: starting
the answer raised, the provider's stream was left open until garbage collection and the text was lost)."""

from __future__ import annotations

import os
import threading

import pytest

from conftest import raw_post, started_with_provider, wait_for
from servers.openai_server import Provider, serve_threaded
from sessiond.client import ApiError

WORDS = [f"w{i}" for i in range(12)]


@pytest.fixture
def loop_provider():
    p, server = serve_threaded(Provider())
    yield p, server.port
    server.stop()


def assistant(c, sid):
    return [m for m in c.messages(sid)["messages"] if m["role"] == "assistant"]


def open_to(port: int) -> bool:
    """Whether a TCP connection to 127.0.0.1:`port` (the daemon's to the provider) is still open on this
    side: established, or closed by the provider and not yet seen closed by the daemon (/proc/net/tcp's
    states 01 and 08)."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return any(r[2] == f"0100007F:{port:04X}" and r[3] in ("01", "08") for r in rows)


def paused(make_daemon, port: int, point: str, tmp_path):
    """A daemon whose provider is the loopback one, that stops at fault hook `point` until its flag file
    is removed: (daemon, flag)."""
    flag = str(tmp_path / "paused")
    d = make_daemon(env={"SESSIOND_TEST_PAUSE": f"{point}:{flag}"})
    started_with_provider(lambda: d, f"http://127.0.0.1:{port}/v1")
    return d, flag


def test_everything_a_cut_stream_sent_is_recorded(make_daemon, loop_provider, tmp_path):
    p, port = loop_provider
    d, flag = paused(make_daemon, port, "complete.head", tmp_path)
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    p.faults.cut_after = 10  # "echo:" and 9 words written, then the connection dropped at once
    errors: list[ApiError] = []

    def ask():
        try:
            "".join(c.complete_stream(sid, " ".join(WORDS)))
        except ApiError as exc:
            errors.append(exc)

    t = threading.Thread(target=ask)
    t.start()
    try:
        wait_for(lambda: os.path.exists(flag), timeout=20, what="the daemon at the hook")
        wait_for(lambda: p.cuts == 1, timeout=20, what="the provider's cut")
        # the daemon has seen the connection's end (its side closed) while it held the text unread
        wait_for(lambda: not open_to(port), timeout=20, what="the daemon's connection closed")
    finally:
        os.remove(flag)
        t.join(timeout=60)
    assert errors and errors[0].code == "provider_stream_cut", errors
    [a] = assistant(c, sid)
    assert a["interrupted"] is True and a["error"] == "provider_stream_cut"
    assert a["content"] == "echo: " + " ".join(WORDS[:9])


def daemon_connections(d) -> int:
    """How many sockets the daemon has open at its socket's path (its listener, and one per app connected)."""
    with open("/proc/net/unix") as f:
        return sum(1 for line in f if line.rstrip("\n").endswith(" " + d.socket))


def test_an_app_gone_before_the_first_chunk_was_passed_on_keeps_it_and_stops_the_provider(
    make_daemon, loop_provider, tmp_path
):
    p, port = loop_provider
    d, flag = paused(make_daemon, port, "complete.head", tmp_path)
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    p.faults.role_chunk = False  # the first chunk holds "echo:"
    p.faults.delay = 0.2  # the fault itself: a slow stream, still going when the app leaves
    before = daemon_connections(d)
    s = raw_post(d.socket, f"/v1/sessions/{sid}/complete", {"content": " ".join(WORDS), "stream": True})
    try:
        wait_for(lambda: os.path.exists(flag), timeout=20, what="the daemon at the hook, with the first chunk")
    finally:
        s.close()
    wait_for(lambda: daemon_connections(d) == before, timeout=20, what="the daemon seeing the app gone")
    os.remove(flag)
    wait_for(lambda: p.streams_stopped == 1, timeout=20, what="the provider's generation stopped")
    [a] = wait_for(lambda: assistant(c, sid), timeout=20, what="what arrived recorded")
    assert a["interrupted"] is True and a["content"] == "echo:"
    logs = "".join(open(os.path.join(d.home, "logs", f)).read() for f in os.listdir(os.path.join(d.home, "logs")))
    assert "Traceback" not in logs
