"""A streamed answer that stops early keeps all of what arrived. A provider that writes part of an answer
and drops the connection at once, while the daemon is busy elsewhere (here: held by a fault hook just
after the first chunk; in use, the question's commit, an app slow to read): everything it wrote reached
the daemon and is recorded, marked interrupted (was: aiohttp raised the connection's failure before the
text it still held, and the answer recorded stopped at what had been read before the cut)."""

from __future__ import annotations

import os
import threading

import pytest

from conftest import started_with_provider, wait_for
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
