"""`sessiond sync --wait` against a store that refuses for a reason waiting does not mend (a quota used up,
a full disk, refused credentials): it ends as soon as the push has failed, naming the error, instead of
running out its timeout in silence. Real processes: a relay with a tiny quota, a daemon pushing to it."""

from __future__ import annotations

import errno
import json
import time

import pytest

from conftest import DaemonProc, relay_served, run_cli
from sessiond.stores.errors import (
    AuthRefused,
    FolderDenied,
    ServerError,
    StoreFull,
    StoreUnreachable,
    folder_error,
    settled,
)


@pytest.fixture
def small_relay(tmp_path):
    with relay_served(str(tmp_path / "relay"), "--open-registration", "--quota", "2K") as info:
        yield info["url"]


def test_sync_wait_ends_at_once_on_a_store_out_of_room(small_relay, tmp_path):
    d = DaemonProc(str(tmp_path / "home"), small_relay).start()
    try:
        c = d.client()
        sid = c.create_session(name="big")["id"]
        c.append(sid, "user", "z" * 20_000)  # more than the account's 2 KiB
        t0 = time.monotonic()
        res = run_cli(d.home, "sync", "--wait", "--timeout", "60", "--json")
        took = time.monotonic() - t0
        assert res.returncode == 1, res.stdout + res.stderr
        out = json.loads(res.stdout)
        assert out["pushed"] is False and out["complete"] is False
        assert "quota" in out["sessions"][sid]["last_error"]
        assert took < 30, f"sync --wait ran {took:.1f} s of its 60 s timeout"
        res = run_cli(d.home, "sync", "--wait", "--timeout", "60")  # and the text says why
        assert res.returncode == 1 and "quota" in res.stdout and "not everything could be pushed" in res.stdout
    finally:
        d.stop()


def test_which_failures_waiting_does_not_mend():
    full = folder_error(
        "cannot write object ab", "/srv/store/objects", OSError(errno.ENOSPC, "No space left on device")
    )
    assert isinstance(full, StoreFull) and "/srv/store/objects is full" in full.args[0]
    assert "another store" in full.args[0]
    denied = folder_error("cannot write object ab", "/srv/store/objects", OSError(errno.EACCES, "Permission denied"))
    assert isinstance(denied, FolderDenied) and "fix the folder's permissions" in denied.args[0]
    failing = folder_error("cannot write object ab", "/srv/store/objects", OSError(errno.EIO, "Input/output error"))
    assert isinstance(failing, ServerError) and "Input/output error in /srv/store/objects" in failing.args[0]
    assert settled(full) and settled(AuthRefused("no")) and settled(denied)  # changing the permissions mends it
    assert not settled(failing) and not settled(StoreUnreachable("down")) and not settled(TimeoutError())


def test_a_relay_quota_used_up_is_the_store_full_not_an_object_too_large(small_relay, tmp_path):
    d = DaemonProc(str(tmp_path / "home"), small_relay).start()
    try:
        c = d.client()
        sid = c.create_session(name="small")["id"]
        c.append(sid, "user", "z" * 3_000)  # each page well under the 1 MiB object limit, together past 2 KiB
        res = run_cli(d.home, "sync", "--wait", "--timeout", "60", "--json")
        assert res.returncode == 1, res.stdout + res.stderr
        error = json.loads(res.stdout)["sessions"][sid]["last_error"]
        assert "quota" in error and "no room" in error, error
        assert "too large" not in error, error  # main: "the server says the object is too large (HTTP 413: ...quota)"
    finally:
        d.stop()


def test_doctor_s_fix_for_a_store_out_of_room_is_to_make_room_not_to_wait(small_relay, tmp_path):
    d = DaemonProc(str(tmp_path / "home"), small_relay).start()
    try:
        c = d.client()
        sid = c.create_session(name="big")["id"]
        c.append(sid, "user", "z" * 20_000)
        assert run_cli(d.home, "sync", "--wait", "--timeout", "60").returncode == 1
        res = run_cli(d.home, "doctor", "--json", "--no-verify")
        assert res.returncode == 1, res.stdout + res.stderr
        findings = json.loads(res.stdout)["findings"]
        (push,) = [f for f in findings if f["check"] == "push" and sid in f["message"]]
        assert push["level"] == "problem" and "quota" in push["message"], push
        # main: "sessiond sync --wait SID", which fails again at once (the quota is still used up)
        assert "sync --wait" not in push["fix"], push
        assert "sessiond gc" in push["fix"] and "--quota" in push["fix"] and "--change-store" in push["fix"], push
        for store in [f for f in findings if f["check"] == "store" and f["level"] == "problem"]:
            assert "once the store answers again" not in store["fix"], store
    finally:
        d.stop()
