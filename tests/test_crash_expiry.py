"""kill -9 in the middle of a session's removal: an expired session's delete (delete_expired) and `rm`. Each
writes the session's end or its rows, then deletes more (the rows, the key files): a crash between the two
must not leave an expired session undeleted, nor the key of a deleted session on disk (its store copy would
stay readable: `rm` promises crypto-shredding). SESSIOND_CRASH_AT names the point where the daemon dies."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from conftest import run_cli, wait_for, write_config
from sessiond.client import ClientError


def _key_files(home: str, sid: str) -> list[str]:
    folder = os.path.join(home, "keys", "sessions")
    return sorted(f for f in os.listdir(folder) if f.rsplit(".", 1)[0] == sid) if os.path.isdir(folder) else []


def _gone(c, sid: str) -> None:
    with pytest.raises(ClientError) as exc:
        c.get_session(sid)
    assert exc.value.status == 404, exc.value


@pytest.mark.parametrize("point", ["end.ended", "expire.pushed"])
def test_an_expired_session_killed_before_its_delete_is_deleted_at_the_next_start(make_daemon, store_dir, point):
    """With delete_expired, the clean-up ends an expired session, pushes its end, then deletes it: a crash
    after the end left it ended and never deleted (the clean-up only looked at sessions not ended). A session
    a user ended by hand, with no expiry, stays."""
    d = make_daemon(f"file://{store_dir}")
    write_config(d.home, cleanup_interval=0.3, delete_expired=True)
    d.start()
    c = d.client()
    by_hand = c.create_session(name="ended by hand")["id"]
    c.append(by_hand, "user", "kept")
    c.end(by_hand)
    d.env["SESSIOND_CRASH_AT"] = point
    d.restart()
    c = d.client()
    sid = c.create_session(name="short-lived")["id"]
    c.append(sid, "user", "hello")
    assert c.sync(sid, wait=True, timeout=10)["complete"]
    assert _key_files(d.home, sid)
    # its expiry set last: made to expire in a second, a sync slower than that met the crash (its request cut)
    c.update_session(sid, expires_in=1)
    assert d.proc is not None
    d.proc.wait(20)  # the clean-up met the session's expiry, and the daemon died part-way
    d.env.pop("SESSIOND_CRASH_AT")
    d.start()
    c = d.client()
    _gone(c, sid)  # deleted before the first request, as a session that expired while stopped
    assert sid not in [s["id"] for s in c.list_sessions()["sessions"]]
    assert _key_files(d.home, sid) == []
    assert c.get_session(by_hand)["status"] == "ended"
    assert [m["content"] for m in c.messages(by_hand)["messages"]] == ["kept"]
    res = run_cli(d.home, "doctor", "--json")
    assert res.returncode == 0, res.stdout


def test_a_session_ended_by_hand_is_deleted_at_its_expiry_with_delete_expired(make_daemon):
    """delete_expired deletes a session at its expiry whether it was still active or ended by hand before
    it: its expiry says how long it is kept. One without an expiry stays."""
    d = make_daemon()
    write_config(d.home, cleanup_interval=30, delete_expired=True)  # the loop must wake for it, not poll
    d.start()
    c = d.client()
    # its message and its end must come before its expiry: 4 s for them (a loaded machine can hold the test)
    sid = c.create_session(name="ended early", expires_in=4)["id"]
    c.append(sid, "user", "hello")
    c.end(sid)
    kept = c.create_session(name="no expiry")["id"]
    c.end(kept)
    expires = c.get_session(sid)["expires_at"]
    wait_for(lambda: sid not in [s["id"] for s in c.list_sessions()["sessions"]], timeout=15, what="its delete")
    assert time.time() >= expires
    _gone(c, sid)
    assert _key_files(d.home, sid) == []
    assert c.get_session(kept)["status"] == "ended"


def test_rm_killed_before_its_key_files_are_deleted_leaves_no_key(make_daemon, store_dir):
    """`rm` deletes the session's rows, then its key files: a crash between them left the key of a session
    that no longer exists, for ever (its store copy readable with it). The next start deletes it."""
    d = make_daemon(f"file://{store_dir}").start()
    c = d.client()
    sid = c.create_session(name="to delete")["id"]
    c.append(sid, "user", "secret")
    kept = c.create_session(name="kept")["id"]
    c.append(kept, "user", "stays")
    assert c.sync(None, wait=True, timeout=10)["complete"]
    assert _key_files(d.home, sid) and _key_files(d.home, kept)
    d.env["SESSIOND_CRASH_AT"] = "delete.rows"
    d.restart()
    res = run_cli(d.home, "rm", sid, "--json")
    assert res.returncode != 0, res.stdout  # the daemon died answering it
    assert d.proc is not None
    d.proc.wait(10)
    d.env.pop("SESSIOND_CRASH_AT")
    d.start()
    c = d.client()
    _gone(c, sid)
    assert _key_files(d.home, sid) == []
    assert _key_files(d.home, kept) == [f"{kept}.key"]
    assert [m["content"] for m in c.messages(kept)["messages"]] == ["stays"]


def test_a_start_deletes_the_key_files_of_sessions_that_do_not_exist(make_daemon, store_dir):
    """Key files left behind by whatever stopped part-way (an `rm`, an import cut short after its keys were
    written) are deleted at the next start; those of every session here stay."""
    d = make_daemon(f"file://{store_dir}").start()
    c = d.client()
    sid = c.create_session(name="kept")["id"]
    c.append(sid, "user", "stays")
    c.share(sid, write=True)  # a key and a write secret
    assert c.sync(sid, wait=True, timeout=10)["complete"]
    d.stop()
    folder = os.path.join(d.home, "keys", "sessions")
    mine = _key_files(d.home, sid)
    assert f"{sid}.key" in mine and f"{sid}.write" in mine
    for suffix in ("key", "write", "old", "rekey"):  # a removed session's files, whatever they were
        shutil.copy(os.path.join(folder, f"{sid}.key"), os.path.join(folder, f"ghost.{suffix}"))
    with open(os.path.join(folder, "notes.txt"), "w") as f:  # not a key file of ours: left alone
        f.write("mine")
    # a key's write that a crash cut short before its rename (fsutil.atomic_write's temporary file)
    shutil.copy(os.path.join(folder, f"{sid}.key"), os.path.join(folder, f".tmp-{sid}.key-0123456789ab"))
    d.start()
    c = d.client()
    assert _key_files(d.home, "ghost") == []
    assert _key_files(d.home, sid) == mine
    assert os.path.exists(os.path.join(folder, "notes.txt"))
    assert not [f for f in os.listdir(folder) if f.startswith(".tmp-")]
    assert [m["content"] for m in c.messages(sid)["messages"]] == ["stays"]
    assert c.sync(sid, wait=True, timeout=10)["complete"]


def test_a_cleanup_killed_after_its_first_delete_leaves_each_session_whole_or_gone(make_daemon, store_dir):
    """`cleanup` deletes the idle sessions one by one (each `rm`'s delete: its rows, then its key files).
    Killed after the first one's rows: that one is gone whole (its keys deleted at the next start), the
    others are there whole, and the clean-up asked again deletes them; verify and doctor are clean."""
    d = make_daemon(f"file://{store_dir}").start()
    c = d.client()
    sids = [c.create_session(name=f"idle {i}")["id"] for i in range(3)]
    for sid in sids:
        c.append(sid, "user", f"in {sid}")
    assert c.sync(None, wait=True, timeout=10)["complete"]
    d.env["SESSIOND_CRASH_AT"] = "delete.rows"
    d.restart()
    res = run_cli(d.home, "cleanup", "--older-than", "0s", "--yes", "--json")
    assert res.returncode != 0, res.stdout  # the daemon died after the first delete's rows
    assert d.proc is not None and d.proc.wait(10) == 137
    d.env.pop("SESSIOND_CRASH_AT")
    d.start()
    c = d.client()
    left = [s["id"] for s in c.list_sessions()["sessions"]]
    assert len(left) == 2 and set(left) < set(sids), left
    (gone,) = set(sids) - set(left)
    _gone(c, gone)
    assert _key_files(d.home, gone) == []
    for sid in left:
        assert [m["content"] for m in c.messages(sid)["messages"]] == [f"in {sid}"]
        assert _key_files(d.home, sid)
    assert run_cli(d.home, "verify", "--json").returncode == 0
    assert run_cli(d.home, "doctor", "--json").returncode == 0
    done = json.loads(run_cli(d.home, "cleanup", "--older-than", "0s", "--yes", "--json", check=True).stdout)
    assert sorted(s["id"] for s in done["sessions"]) == sorted(left)
    assert c.list_sessions()["sessions"] == [] and not any(_key_files(d.home, s) for s in sids)
