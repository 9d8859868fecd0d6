"""A session whose expiry (or idle timeout) passes while the daemon runs: the first write after it is
refused (409 `expired`, naming the session, when it expired and the way on) and the session is ended then,
as the clean-up ends it (its final checkpoint, its end pushed; deleted with delete_expired), not up to
cleanup_interval later."""

from __future__ import annotations

import time

import pytest

from conftest import started_with, wait_for
from sessiond.client import ClientError

NO_CLEANUP = 0  # no clean-up loop (it would end each session at its expiry): only the write can end it
HOUR = 3600


def _short_lived(c, n: int = 1, name: str = "short-lived") -> tuple[list[str], int]:
    """`n` sessions expiring in a second, each with one message; returns their ids once all have expired,
    and the checkpoints each had."""
    sids = []
    for i in range(n):  # its expiry set once it has its message (made to expire in a second, the append raced it)
        sid = c.create_session(name=f"{name} {i}", expires_in=HOUR)["id"]
        c.append(sid, "user", "hello")
        c.update_session(sid, expires_in=1)
        sids.append(sid)
    expires = max(c.get_session(sid)["expires_at"] for sid in sids)
    before = len(c.checkpoints(sids[0])["checkpoints"])
    wait_for(lambda: time.time() > expires + 0.1, timeout=10, what="the sessions' expiry")
    return sids, before


def _refused(call, sid: str, *, forks: bool = True) -> ClientError:
    """The write's refusal, naming its ways on: a clone, and a fork at a message when it holds one (`forks`)."""
    with pytest.raises(ClientError) as exc:
        call()
    err = exc.value
    assert err.status == 409, err
    assert err.code == "expired", err
    assert sid in err.message and "expired at" in err.message, err.message
    assert f"sessiond clone {sid}" in err.message, err.message
    assert (f"sessiond fork {sid}" in err.message) == forks, err.message
    return err


def test_an_append_past_the_expiry_is_refused_and_ends_the_session(make_daemon):
    d = started_with(make_daemon, cleanup_interval=NO_CLEANUP)
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
    # the first refusal ends every session then due (expire_due): so each session is made once the one
    # before was refused, and each write is the first to find its own session expired (made all at first,
    # a second apart, a write later than a second past its session's expiry found the next one ended)
    d = started_with(make_daemon, cleanup_interval=NO_CLEANUP)
    c = d.client()
    writes = [
        lambda sid: c.update_session(sid, name="renamed"),
        lambda sid: c.create_chat(sid, name="side"),
        lambda sid: c.pause(sid),
        lambda sid: c.compact(sid, target_tokens=1),
    ]
    sids = []
    for i, write in enumerate(writes):
        ((sid,), _) = _short_lived(c, name=f"short-lived {i}")
        _refused(lambda: write(sid), sid)
        sids.append(sid)
    for sid in sids:
        wait_for(lambda: c.get_session(sid)["status"] == "ended", timeout=30, what="each expired session ended")
        assert c.get_session(sid)["name"].startswith("short-lived")
        assert "side" not in [ch.get("name") for ch in c.list_chats(sid)["chats"]]


def test_with_delete_expired_the_write_that_finds_it_expired_deletes_it(make_daemon):
    d = started_with(make_daemon, cleanup_interval=NO_CLEANUP, delete_expired=True)
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


def _idled(make_daemon):
    """A session with one message, idle past its idle_timeout (1 s), no clean-up to end it: (client, id,
    its last activity)."""
    d = started_with(make_daemon, cleanup_interval=NO_CLEANUP)
    c = d.client()
    sid = c.create_session(name="idle", idle_timeout=HOUR)["id"]
    c.append(sid, "user", "hello")
    c.update_session(sid, idle_timeout=1)  # once it has its message (made with 1 s, the append raced it)
    last = c.get_session(sid)["last_activity"]
    wait_for(lambda: time.time() > last + 1.1, timeout=10, what="the idle timeout")
    return c, sid, last


def test_an_append_past_the_idle_timeout_is_refused_and_ends_the_session(make_daemon):
    # idle for longer than its idle_timeout, the session has expired, whenever the clean-up next runs: a
    # write then must not revive it (before, it was taken and reset the idle clock)
    c, sid, last = _idled(make_daemon)
    err = _refused(lambda: c.append(sid, "user", "too late"), sid)
    assert "idle_timeout (1 s)" in err.message, err.message
    assert err.details.get("expired_at") == pytest.approx(last + 1), err.details
    wait_for(lambda: c.get_session(sid)["status"] == "ended", timeout=30, what="the idle session ended")
    assert [m["content"] for m in c.messages(sid)["messages"]] == ["hello"]
    assert c.clone(sid)["status"] == "active"


def test_other_writes_past_the_idle_timeout_are_refused(make_daemon):
    d = started_with(make_daemon, cleanup_interval=NO_CLEANUP)
    c = d.client()
    sids = []
    # one after the other, so that each write is the first to find its session expired (see above)
    for i, write in enumerate((lambda sid: c.update_session(sid, name="renamed"), lambda sid: c.pause(sid))):
        s = c.create_session(name=f"idle {i}", idle_timeout=1)
        wait_for(lambda: time.time() > s["last_activity"] + s["policy"]["idle_timeout"] + 0.05, timeout=10)
        _refused(lambda: write(s["id"]), s["id"], forks=False)  # (no message to fork at)
        sids.append(s["id"])
    for sid in sids:
        wait_for(lambda: c.get_session(sid)["status"] == "ended", timeout=30, what="each idle session ended")
        assert c.get_session(sid)["name"].startswith("idle")


def test_writes_within_the_idle_timeout_keep_the_session_going(make_daemon):
    # each write is activity: a session written more often than its idle timeout never expires
    d = started_with(make_daemon, cleanup_interval=NO_CLEANUP)
    c = d.client()
    # each write comes a second after the one before, 3 s within the timeout (a loaded machine can hold
    # the test that long); five of them outlast the timeout
    sid = c.create_session(name="busy", idle_timeout=4)["id"]
    first = c.append(sid, "user", "0")
    for i in range(1, 6):
        last = c.get_session(sid)["last_activity"]
        wait_for(lambda: time.time() > last + 1, timeout=10, what="a second of quiet")
        c.append(sid, "user", str(i))
    assert time.time() > first["created_at"] + 4  # past the timeout, counted from the first
    assert c.get_session(sid)["status"] == "active"
    assert [m["content"] for m in c.messages(sid)["messages"]] == ["0", "1", "2", "3", "4", "5"]


def test_a_checkpoint_past_the_idle_timeout_is_refused_and_does_not_revive_it(make_daemon):
    # a checkpoint is written into the session's log like any change: taken past the idle timeout it reset
    # the idle clock, and the expired session went on taking messages as if it had never idled
    c, sid, last = _idled(make_daemon)
    _refused(lambda: c.checkpoint(sid), sid)
    wait_for(lambda: c.get_session(sid)["status"] == "ended", timeout=30, what="the idle session ended")
    with pytest.raises(ClientError):
        c.append(sid, "user", "revived?")
    assert [m["content"] for m in c.messages(sid)["messages"]] == ["hello"]
    # its end made the final checkpoint (a moment after the end is committed, as test_expiry_on_time waits
    # for it), and a checkpoint of the ended session is that one
    wait_for(lambda: c.checkpoints(sid)["checkpoints"], timeout=10, what="the final checkpoint of the end")
    (final,) = c.checkpoints(sid)["checkpoints"]
    assert c.checkpoint(sid)["number"] == final["number"]


def test_an_expiry_time_already_past_is_refused_at_create_and_change(daemon):
    """expires_at before now made an active session (201) whose first write was then refused 409 expired,
    or a PATCH that ended the session a second later: both are a 422 saying the time is past, nothing
    created or changed."""
    c = daemon.client()
    past = time.time() - 60
    with pytest.raises(ClientError) as exc:
        c.create_session(id="late", expires_at=past)
    assert exc.value.status == 422 and "expires_at" in exc.value.message and "past" in exc.value.message, exc.value
    assert c.list_sessions()["sessions"] == []
    sid = c.create_session(id="s", expires_in=3600)["id"]
    before = c.get_session(sid)["expires_at"]
    with pytest.raises(ClientError) as exc:
        c.update_session(sid, expires_at=past)
    assert exc.value.status == 422 and "expires_at" in exc.value.message and "past" in exc.value.message, exc.value
    s = c.get_session(sid)
    assert s["status"] == "active" and s["expires_at"] == before
    c.append(sid, "user", "still here")
    future = time.time() + 3600
    assert c.update_session(sid, expires_at=future)["expires_at"] == pytest.approx(future)


def test_an_expired_session_with_no_messages_names_only_ways_on_that_work(make_daemon):
    """An expired session holding no message was refused with `sessiond fork ID --at MESSAGE_ID` as a way on,
    which needs a message to fork at: it names a clone (no history to copy) and how to give the clone an
    expiry (a clone has none: `sessiond set NEW_ID --expires-in`), and no fork, in the CLI's terms and the
    API's, at the write that ends it and at those after."""
    d = started_with(make_daemon, cleanup_interval=NO_CLEANUP)
    c = d.client()
    sid = c.create_session(name="empty", expires_in=1)["id"]
    expires = c.get_session(sid)["expires_at"]
    wait_for(lambda: time.time() > expires + 0.1, timeout=10, what="the session's expiry")
    for attempt in ("ends it", "after its end"):
        with pytest.raises(ClientError) as exc:
            c.append(sid, "user", "too late")
        err = exc.value
        assert err.code == "expired" and "expired at" in err.message, (attempt, err.message)
        assert f"sessiond clone {sid}" in err.message and "--expires-in" in err.message, (attempt, err.message)
        assert "fork" not in err.message, (attempt, err.message)
        assert err.details.get("api") == [f"POST /v1/sessions/{sid}/clone"], (attempt, err.details)
        wait_for(lambda: c.get_session(sid)["status"] == "ended", timeout=30, what="the expired session ended")
    clone = c.clone(sid)
    assert clone["status"] == "active" and c.update_session(clone["id"], expires_in=HOUR)["expires_at"]
    # one that holds messages still names the fork
    (full,), _ = _short_lived(c, name="full")
    with pytest.raises(ClientError) as exc:
        c.append(full, "user", "too late")
    assert f"sessiond fork {full} --at MESSAGE_ID" in exc.value.message, exc.value.message
