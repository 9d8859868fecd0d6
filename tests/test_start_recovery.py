"""What a daemon settles at its start, before its socket serves: sessions that expired while no daemon ran
are ended (or deleted) as the running clean-up ends them, and an import from a file that a kill -9 cut
short is rolled back whole."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from conftest import PY, wait_for
from sessiond.client import ClientError

LONG = 3600  # a clean-up interval no test waits out: only the start can have expired the session


def _config(home: str, **settings) -> None:
    os.makedirs(home, mode=0o700, exist_ok=True)
    with open(os.path.join(home, "config.toml"), "w") as f:
        for k, v in settings.items():
            f.write(f"{k} = {json.dumps(v)}\n")


def _expired_while_stopped(make_daemon, **settings):
    """A daemon with one session that expires while the daemon is stopped; returns (daemon, session id,
    checkpoints it had). The daemon is stopped."""
    d = make_daemon()
    _config(d.home, cleanup_interval=LONG, **settings)
    d.start()
    c = d.client()
    sid = c.create_session(name="short-lived", expires_in=1)["id"]
    c.append(sid, "user", "hello")
    expires = c.get_session(sid)["expires_at"]
    before = len(c.checkpoints(sid)["checkpoints"])
    assert c.get_session(sid)["status"] == "active"
    d.stop()
    wait_for(lambda: time.time() > expires + 0.1, timeout=10, what="the session's expiry")
    return d, sid, before


def test_a_session_that_expired_while_stopped_is_ended_before_the_first_request(make_daemon):
    d, sid, before = _expired_while_stopped(make_daemon)
    d.start()
    c = d.client()
    session = c.get_session(sid)
    assert session["status"] == "ended", session
    with pytest.raises(ClientError) as exc:
        c.append(sid, "user", "too late")
    assert exc.value.status == 409, exc.value
    # ended as the clean-up ends it: with its final checkpoint, and that end pushed
    assert len(c.checkpoints(sid)["checkpoints"]) == before + 1
    assert c.sync(sid, wait=True, timeout=30)["complete"]
    assert [m["content"] for m in c.messages(sid)["messages"]] == ["hello"]


def test_with_delete_expired_it_is_gone_before_the_first_request(make_daemon):
    d, sid, _ = _expired_while_stopped(make_daemon, delete_expired=True)
    d.start()
    c = d.client()
    with pytest.raises(ClientError) as exc:
        c.get_session(sid)
    assert exc.value.status == 404, exc.value
    assert sid not in [s["id"] for s in c.list_sessions()["sessions"]]
