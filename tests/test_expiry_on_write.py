"""A session whose expiry passes while the daemon runs: the first write after it is refused (409 `expired`,
naming the session, when it expired and the way on) and the session is ended then, as the clean-up ends it
(its final checkpoint, its end pushed; deleted with delete_expired), not up to cleanup_interval later."""

from __future__ import annotations

import json
import os
import time

import pytest

from conftest import wait_for
from sessiond.client import ClientError

LONG = 3600  # a clean-up interval no test waits out: only the write can end the session


def _config(home: str, **settings) -> None:
    os.makedirs(home, mode=0o700, exist_ok=True)
    with open(os.path.join(home, "config.toml"), "w") as f:
        for k, v in settings.items():
            f.write(f"{k} = {json.dumps(v)}\n")


def _short_lived(c, n: int = 1) -> tuple[list[str], int]:
    """`n` sessions expiring in a second, each with one message; returns their ids once all have expired,
    and the checkpoints each had."""
    sids = []
    for i in range(n):
        sid = c.create_session(name=f"short-lived {i}", expires_in=1)["id"]
        c.append(sid, "user", "hello")
        sids.append(sid)
    expires = max(c.get_session(sid)["expires_at"] for sid in sids)
    before = len(c.checkpoints(sids[0])["checkpoints"])
    wait_for(lambda: time.time() > expires + 0.1, timeout=10, what="the sessions' expiry")
    return sids, before


def _refused(call, sid: str) -> ClientError:
    with pytest.raises(ClientError) as exc:
        call()
    err = exc.value
    assert err.status == 409, err
    assert err.code == "expired", err
    assert sid in err.message and "expired at" in err.message, err.message
    assert f"sessiond clone {sid}" in err.message and f"sessiond fork {sid}" in err.message, err.message
    return err


def test_an_append_past_the_expiry_is_refused_and_ends_the_session(make_daemon):
    d = make_daemon()
    _config(d.home, cleanup_interval=LONG)
    d.start()
    c = d.client()
    (sid,), before = _short_lived(c)
    err = _refused(lambda: c.append(sid, "user", "too late"), sid)
    assert err.details.get("session") == sid and err.details.get("expired_at"), err.details
    # ended now (not at the clean-up's next run, an hour away), as the clean-up ends it
    wait_for(lambda: c.get_session(sid)["status"] == "ended", timeout=30, what="the expired session ended")
    wait_for(lambda: len(c.checkpoints(sid)["checkpoints"]) == before + 1, timeout=30, what="its final checkpoint")
    assert c.sync(sid, wait=True, timeout=30)["complete"]
    assert [m["content"] for m in c.messages(sid)["messages"]] == ["hello"]
    # the ways out the refusal names work
    assert c.clone(sid)["status"] == "active"


def test_the_other_writes_past_the_expiry_are_refused(make_daemon):
    d = make_daemon()
    _config(d.home, cleanup_interval=LONG)
    d.start()
    c = d.client()
    sids, _ = _short_lived(c, 4)
    writes = [
        lambda sid: c.update_session(sid, name="renamed"),
        lambda sid: c.create_chat(sid, name="side"),
        lambda sid: c.pause(sid),
        lambda sid: c.compact(sid, target_tokens=1),
    ]
    for sid, write in zip(sids, writes, strict=True):
        # each refused while the session is not ended yet (later writes meet an ended session)
        if c.get_session(sid)["status"] != "ended":
            _refused(lambda: write(sid), sid)
    for sid in sids:
        wait_for(lambda: c.get_session(sid)["status"] == "ended", timeout=30, what="each expired session ended")
        assert c.get_session(sid)["name"].startswith("short-lived")


def test_with_delete_expired_the_write_that_finds_it_expired_deletes_it(make_daemon):
    d = make_daemon()
    _config(d.home, cleanup_interval=LONG, delete_expired=True)
    d.start()
    c = d.client()
    (sid,), _ = _short_lived(c)
    _refused(lambda: c.append(sid, "user", "too late"), sid)

    def gone() -> bool:
        try:
            c.get_session(sid)
        except ClientError as exc:
            return exc.status == 404
        return False

    wait_for(gone, timeout=30, what="the expired session deleted")
    assert sid not in [s["id"] for s in c.list_sessions()["sessions"]]
