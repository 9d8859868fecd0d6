"""Sessions end at their expiry, not up to cleanup_interval later: the daemon's clean-up sleeps until the
next expiry or idle timeout (daemon/operations.py), and a session created or changed to expire sooner
wakes it. Here cleanup_interval is an hour, so only that can end them in time; nothing writes to them."""

from __future__ import annotations

import os
import time

from conftest import started_with, wait_for, write_config

HOUR = 3600
LATE = 3.0  # seconds past its expiry a session may still read as active on a busy machine (it takes ms)


def _ended_by(c, sid: str, when: float) -> None:
    """`sid` reads as active shortly before `when`, and as ended soon after it."""
    wait_for(lambda: time.time() > when - 0.3, timeout=10, what="shortly before its expiry")
    if time.time() < when - 0.05:
        status = c.get_session(sid)["status"]
        # ended only if the answer came once its expiry was (about) there: a busy machine can take that long
        assert status == "active" or time.time() >= when - 0.05, status
    wait_for(lambda: c.get_session(sid)["status"] == "ended", timeout=when - time.time() + LATE, what="its end")
    # ended as `end` ends it: with a final checkpoint, made just after the end is committed (a reader can
    # see the end a moment before its checkpoint: daemon/operations.py `_end`)
    wait_for(lambda: c.checkpoints(sid)["checkpoints"], timeout=10, what="its final checkpoint")


def test_a_session_ends_at_its_expiry(make_daemon):
    d = started_with(make_daemon, cleanup_interval=HOUR)
    c = d.client()
    keep = c.create_session(name="for good")["id"]
    later = c.create_session(name="later", expires_in=HOUR)["id"]
    sid = c.create_session(name="short-lived", expires_in=1)["id"]  # after the one that expires later
    _ended_by(c, sid, c.get_session(sid)["expires_at"])
    assert [c.get_session(s)["status"] for s in (keep, later)] == ["active", "active"]


def test_a_session_ends_at_its_idle_timeout_counted_from_its_last_activity(make_daemon):
    d = started_with(make_daemon, cleanup_interval=HOUR)
    c = d.client()
    sid = c.create_session(name="idle", idle_timeout=4)["id"]  # (3 s more than the quiet below: a busy machine)
    first = c.get_session(sid)["last_activity"]
    # (past first + 1 by more than the daemon's rounding of times to the millisecond: its stamp of the append
    # could otherwise be first + 1 exactly)
    wait_for(lambda: time.time() > first + 1.002, timeout=10, what="a second of quiet")
    c.append(sid, "user", "still here")  # activity: the timeout counts from here now
    last = c.get_session(sid)["last_activity"]
    assert last > first + 1
    _ended_by(c, sid, last + 4)


def test_a_session_changed_to_expire_sooner_ends_then(make_daemon):
    d = started_with(make_daemon, cleanup_interval=HOUR)
    c = d.client()
    sid = c.create_session(name="changed", expires_in=HOUR)["id"]
    c.update_session(sid, expires_in=1)
    _ended_by(c, sid, c.get_session(sid)["expires_at"])


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_read_only_import_past_its_expiry_leaves_the_cleanup_idle(make_daemon, store_dir):
    # this device cannot end a session it imported read-only (its owner's devices do): the clean-up must
    # not take its past expiry as the next one to wait for, or it would run again at once, for ever
    store = f"file://{store_dir}"
    a, b = make_daemon(store), make_daemon(store)
    # the owner has no clean-up loop, so that it never ends the session (it did if the import and the stop
    # below took longer than the second to its expiry)
    write_config(a.home, cleanup_interval=0)
    write_config(b.home, cleanup_interval=HOUR)
    for d in (a, b):
        d.start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="theirs")["id"]
    ca.append(sid, "user", "hello")
    code = ca.share(sid)["code"]  # read-only
    # after the writes: one past the expiry would end it (test_expiry_on_write)
    expires = ca.update_session(sid, expires_in=1)["expires_at"]
    assert ca.sync(sid, wait=True, timeout=30)["complete"]
    cb.import_code(code)
    a.stop()  # the owner is away: nobody ends it
    assert cb.get_session(sid)["expires_at"] == expires
    wait_for(lambda: time.time() > expires + 0.5, timeout=10, what="past its expiry")
    assert cb.get_session(sid)["status"] == "active" and cb.get_session(sid)["access"] == "read"
    cpu0, t0 = _cpu_seconds(b.proc.pid), time.time()
    wait_for(lambda: time.time() > t0 + 1.5, timeout=10, what="a while")
    used = _cpu_seconds(b.proc.pid) - cpu0
    assert used < 0.5, f"the idle follower used {used:.2f} s of CPU in 1.5 s"
