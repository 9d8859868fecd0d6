"""A shared session's idle timeout, judged on a device that has not pulled yet what the others wrote: its end
is a synced operation, ended for every device, so a device ends it for idleness only once it has pulled it
after it found it idle (a pull that brings nothing new confirms the idleness). A device started after a
night, or resumed from a suspend (its clock stepped on), or cut off from its store, holds none of what the
others wrote meanwhile."""

from __future__ import annotations

import os

from clocks import clocked
from conftest import cli_json, flag_dir, run_cli, wait_for

HOUR = 3600


def _contents(c, sid: str) -> list[str]:
    return [m["content"] for m in c.messages(sid, limit=1000)["messages"]]


def _shared(make_daemon, store_dir):
    """A and B share a session with an idle timeout of a minute; B is stopped. B's clock, and the session's id."""
    store = f"file://{store_dir}"
    a, _clock_a = clocked(make_daemon, 0, store=store, cleanup_interval=HOUR)
    b, clock_b = clocked(make_daemon, 0, store=store, cleanup_interval=HOUR)
    ca, cb = a.start().client(), b.start().client()
    sid = ca.create_session(name="evening", idle_timeout=60)["id"]
    cb.import_code(ca.share(sid, write=True)["code"])
    b.stop()
    return a, b, clock_b, sid


def _pair(make_daemon, store_dir):
    """_shared, B's clock then stepped an hour on while it is stopped (a night, a suspend)."""
    a, b, clock_b, sid = _shared(make_daemon, store_dir)
    clock_b.step(HOUR)
    return a, b, sid


def _pulls_held(b) -> str:
    """B (stopped) to hold each pull that read another device's writes before its apply: the flag that holds it."""
    fetched = os.path.join(flag_dir(), "pull.fetched")
    b.env["SESSIOND_TEST_PAUSE"] = f"pull.fetched:{fetched}"
    return fetched


def _after_a_night(make_daemon, store_dir):
    """_pair, A having written while B was off; B started, its pull of A's write held (`fetched`) and a clean-up
    run since (which found the session idle): B, A's and B's clients, the session's id, the flag."""
    a, b, sid = _pair(make_daemon, store_dir)
    ca = a.client()
    ca.append(sid, "user", "written while B was off")
    assert ca.sync(sid, wait=True, timeout=10)["complete"]
    fetched = _pulls_held(b)  # B's pull read A's write, and is held: nothing confirms the idleness meanwhile
    cb = b.start().client()
    wait_for(lambda: os.path.exists(fetched), timeout=20, what="B's first pull, held before its apply")
    other = cb.create_session(name="ends in a second", expires_in=1)["id"]  # (a clean-up run since the start)
    wait_for(lambda: cb.get_session(other)["status"] == "ended", timeout=10, what="B's clean-up run")
    return b, ca, cb, sid, fetched


def _after_a_suspend(make_daemon, store_dir):
    """_shared, B started, its pull of what A wrote then held (`fetched`), and B's clock stepped an hour on (a
    resume) with a clean-up run since (which found the session idle): A's and B's clients, the session, the flag."""
    a, b, clock_b, sid = _shared(make_daemon, store_dir)
    ca, fetched = a.client(), _pulls_held(b)
    cb = b.start().client()
    other = cb.create_session(name="ends within the hour", expires_in=HOUR // 2)["id"]
    ca.append(sid, "user", "written while B slept")
    wait_for(lambda: os.path.exists(fetched), timeout=20, what="B's pull of A's write, held before its apply")
    clock_b.step(HOUR)
    wait_for(lambda: cb.get_session(other)["status"] == "ended", timeout=15, what="B's clean-up after the step")
    return ca, cb, sid, fetched


def _kept_until_pulled(ca, cb, sid: str, fetched: str, written: str) -> None:
    """B's clean-up has run since it found the session idle, its pull of A's write `written` held (`fetched`):
    the session is kept; let go, the pull brings A's write, and the session stays active on both devices."""
    assert cb.get_session(sid)["status"] == "active"  # not pulled since it was found idle: kept
    os.remove(fetched)
    wait_for(lambda: _contents(cb, sid)[-1:] == [written], timeout=20, what="A's write on B")
    assert cb.get_session(sid)["status"] == "active"
    assert ca.get_session(sid)["status"] == "active"
    ca.append(sid, "assistant", "still in use")  # (refused as expired once B's end reached A)


def test_a_device_started_after_a_night_pulls_before_it_ends_a_shared_session_as_idle(make_daemon, store_dir):
    # A wrote all evening while B was off. B's first clean-up came before its first pull: idle by what B
    # held, the session was ended, and the end synced to A, which was using it.
    _, ca, cb, sid, fetched = _after_a_night(make_daemon, store_dir)
    _kept_until_pulled(ca, cb, sid, fetched, "written while B was off")


def test_a_pull_that_brings_nothing_new_confirms_the_idleness(make_daemon, store_dir):
    # nobody wrote while B was off: idle for every device, B ends it once its pull has found nothing new,
    # and the end reaches A
    a, b, sid = _pair(make_daemon, store_dir)
    cb = b.start().client()
    wait_for(lambda: cb.get_session(sid)["status"] == "ended", timeout=15, what="B's end of it")
    wait_for(lambda: a.client().get_session(sid)["status"] == "ended", timeout=30, what="the end on A")


def test_a_device_resumed_from_a_suspend_pulls_before_it_ends_a_shared_session_as_idle(make_daemon, store_dir):
    # B's clock stepped an hour on (a resume: its clean-up runs within 10 s of the step) while its pull of what
    # A wrote meanwhile had not landed: idle by what B held, the session was ended for every device
    ca, cb, sid, fetched = _after_a_suspend(make_daemon, store_dir)
    _kept_until_pulled(ca, cb, sid, fetched, "written while B slept")


async def test_a_deleted_session_leaves_no_pull_time_behind(tmp_path):
    # the time of each session's last successful pull (SyncContext.pulled, which the idle end of a shared session
    # waits on) stayed after the session was deleted: one entry more for every shared session a long-running
    # daemon ever deleted (its clean-up's, an expiry's, `rm`)
    import time

    from sessiond.storage.database import Database
    from sessiond.stores import FileStore
    from sessiond.sync.engine import Syncer

    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    syncer = Syncer(db, FileStore(os.path.join(tmp_path, "store")), os.path.join(tmp_path, "keys"), timeout=10)
    try:
        sid = (await db.create_session({}))["id"]
        syncer.ctx.pull_ok(sid, began=time.monotonic())  # (what the follower records of a pull of it)
        assert sid in syncer.ctx.pulled
        syncer.forget(sid)  # (what every delete of it does: Operations.delete_session)
        assert sid not in syncer.ctx.pulled
    finally:
        await syncer.stop()
        await db.close()


def test_a_write_here_while_the_idle_end_waits_for_its_pull_is_taken(make_daemon, store_dir):
    # B found the shared session idle, its pull not yet confirming it: the session was not ended, yet an append to
    # it on B was refused as `expired` ("ended now"), and a `set` too; sent again a second later, taken or not. A
    # write here is activity: taken, and the pending idle end dropped
    _, ca, cb, sid, fetched = _after_a_night(make_daemon, store_dir)
    cb.append(sid, "user", "written on B meanwhile")
    assert cb.update_session(sid, name="still the evening")["name"] == "still the evening"
    assert cb.get_session(sid)["status"] == "active"
    os.remove(fetched)  # the pull brings A's write; both stay on both devices, the session active on both
    both = {"written while B was off", "written on B meanwhile"}
    wait_for(lambda: both <= set(_contents(cb, sid)), timeout=20, what="A's write on B")
    wait_for(lambda: both <= set(_contents(ca, sid)), timeout=20, what="B's write on A")
    assert cb.get_session(sid)["status"] == "active"
    assert ca.get_session(sid)["status"] == "active"
    ca.append(sid, "assistant", "still in use")  # (refused as expired once B's end reached A)


def test_a_rekey_during_the_confirming_pull_does_not_confirm_the_idleness(make_daemon, store_dir):
    # B's pull read A's write, and a rekey here switched the session's key before the pull's apply: the
    # generation it read gone, it applied nothing, yet counted as a success. Begun after the clean-up found the
    # session idle, it confirmed the idleness as a pull that found nothing new, and B ended for every device a
    # session A was using
    ca, cb, sid, fetched = _after_a_suspend(make_daemon, store_dir)
    # each pull held (the first began before the clean-up found the session idle, the next after): a rekey here
    # before its apply
    for _ in range(2):
        assert cb.get_session(sid)["status"] == "active"
        cb.rekey(sid)
        os.remove(fetched)
        wait_for(
            lambda: os.path.exists(fetched) or cb.get_session(sid)["status"] == "ended",
            timeout=20,
            what="B's next pull of A's write, held before its apply",
        )

    def applied() -> bool:
        if os.path.exists(fetched):
            os.remove(fetched)  # (any pull held now: let go)
        return "written while B slept" in _contents(cb, sid) or cb.get_session(sid)["status"] == "ended"

    wait_for(applied, timeout=20, what="A's write on B")
    assert cb.get_session(sid)["status"] == "active"
    assert "written while B slept" in _contents(cb, sid)
    ca.append(sid, "assistant", "still in use")  # (refused as expired once B's end reached A)


def test_show_says_a_shared_session_past_its_idle_timeout_waits_for_a_pull(make_daemon, store_dir):
    # a shared session idle past its timeout whose pull does not succeed (its store gone for good) stays active
    # here for ever, as its end would end it for every device (the store back, one that others used meanwhile):
    # `show` said it was active, and nothing why
    b, ca, cb, sid, fetched = _after_a_night(make_daemon, store_dir)
    shown = dict(cb.get_session(sid))
    assert shown["status"] == "active"
    assert shown["idle_end_waits"]["since"] <= shown["last_activity"] + 60 + 1
    assert shown["idle_end_waits"]["pull_error"] is None
    out = run_cli(b.home, "show", sid).stdout
    assert "idle end:      past its idle timeout since" in out, out
    assert "waits for a pull" in out, out
    os.remove(fetched)
    wait_for(lambda: "written while B was off" in _contents(cb, sid), timeout=20, what="A's write on B")
    assert "idle_end_waits" not in cb.get_session(sid)


def test_a_write_here_after_the_pull_confirmed_the_idleness_keeps_the_session(make_daemon, store_dir):
    # B's pull found nothing new, confirming the idleness, and a write here came before B's end of it: the write
    # was taken (the session not ended yet), then the session was ended under it, for every device
    _written_on_b_while_held(
        make_daemon, store_dir, "expire.confirmed", "B's clean-up, its pull confirming the idleness"
    )


def test_a_write_here_while_the_idle_end_waits_is_kept_on_both_devices_though_another_ended_it(make_daemon, store_dir):
    # A ended the shared session while B was off; B, its pull of that end held, takes a write (its idle end waits
    # for the pull: the write is its activity). The end reaches B, the session ends there too, and the write B
    # acknowledged is kept on both devices, not dropped by either
    a, b, sid = _pair(make_daemon, store_dir)
    ca = a.client()
    ca.end(sid)
    fetched = _pulls_held(b)
    cb = b.start().client()
    wait_for(lambda: os.path.exists(fetched), timeout=20, what="B's first pull, held before its apply")
    other = cb.create_session(name="ends in a second", expires_in=1)["id"]  # (a clean-up run since the start)
    wait_for(lambda: cb.get_session(other)["status"] == "ended", timeout=10, what="B's clean-up run")
    cb.append(sid, "user", "written on B meanwhile")
    os.remove(fetched)
    wait_for(lambda: cb.get_session(sid)["status"] == "ended", timeout=20, what="A's end on B")
    assert "written on B meanwhile" in _contents(cb, sid)
    wait_for(lambda: "written on B meanwhile" in _contents(ca, sid), timeout=20, what="B's write on A")
    assert ca.get_session(sid)["status"] == "ended"


def test_a_write_here_just_after_the_end_looked_again_keeps_the_session(make_daemon, store_dir):
    # the expiry's end looks again under its lock (NoLongerExpired), then ends the session in a transaction of its
    # own: a write between the two (an append is not held by an end under way) was taken, then the session ended
    # under it, for every device
    _written_on_b_while_held(make_daemon, store_dir, "end.checked", "B's expiry end, its look again done")


def _written_on_b_while_held(make_daemon, store_dir, point: str, what: str) -> None:
    """_pair, B started with its expiry's end held at the pause point `point` (arrived: `what`), an append on B
    then: once let go (and a clean-up run since), the session is active on both devices, B's write on A."""
    a, b, sid = _pair(make_daemon, store_dir)
    flag = os.path.join(flag_dir(), point)
    b.env["SESSIOND_TEST_PAUSE"] = f"{point}:{flag}"
    cb = b.start().client()
    wait_for(lambda: os.path.exists(flag), timeout=15, what=what)
    cb.append(sid, "user", "written on B just then")
    os.remove(flag)
    other = cb.create_session(name="ends in a second", expires_in=1)["id"]  # (a clean-up run since)

    def other_ended() -> bool:
        if os.path.exists(flag):
            os.remove(flag)  # (the next end held there, the other session's: let go)
        return cb.get_session(other)["status"] == "ended"

    wait_for(other_ended, timeout=10, what="B's clean-up run")
    assert cb.get_session(sid)["status"] == "active"
    wait_for(lambda: "written on B just then" in _contents(a.client(), sid), timeout=20, what="B's write on A")
    assert a.client().get_session(sid)["status"] == "active"


def test_stats_says_a_shared_session_past_its_idle_timeout_waits_for_a_pull_that_keeps_failing(make_daemon, store_dir):
    # a shared session idle past its timeout whose pulls keep failing (its store unreadable) stays active here:
    # `show` said why, `stats` (text, --json, GET /v1/stats?session=) showed an idle session not ended, no reason
    import shutil

    a, b, sid = _pair(make_daemon, store_dir)
    a.stop()
    shutil.rmtree(store_dir)
    with open(store_dir, "w") as f:  # (the store's folder a file now: every read of it fails)
        f.write("not a folder")
    cb = b.start().client()
    other = cb.create_session(name="ends in a second", expires_in=1)["id"]  # (a clean-up run since the start)
    wait_for(lambda: cb.get_session(other)["status"] == "ended", timeout=10, what="B's clean-up run")
    wait_for(
        lambda: (cb.get_session(sid).get("idle_end_waits") or {}).get("pull_error"),
        timeout=20,
        what="B's failed pull of the session",
    )
    shown = dict(cb.get_session(sid))
    st = dict(cb.stats(sid))
    assert st["status"] == "active"
    assert st["idle_end_waits"] == shown["idle_end_waits"], st
    assert cli_json(b.home, "stats", sid)["idle_end_waits"] == shown["idle_end_waits"]
    out = run_cli(b.home, "stats", sid).stdout
    assert "idle end:" in out and "past its idle timeout since" in out and "waits for a pull" in out, out
    assert "last pull failed:" in out, out
    # a session whose end waits for nothing says nothing of it
    assert "idle_end_waits" not in cb.stats(other)
    assert "idle end:" not in run_cli(b.home, "stats", other).stdout
