"""kill -9 between an object's put and the members slot's write naming it (a share's members object, a
rekey's notice): the retry seals the object again under a new salt, and the killed attempt's object stayed
in the store, referenced by nothing and never noted for gc (a leak per such crash). The object is noted as a
gc candidate before its put and forgotten once the slot names it: what a killed attempt put is freed by the
next gc; what the slot names is never freed (a rekey's notice stays in the old slot, which gc no longer
reads once the device has switched), nor by a gc run between the put and the slot's write."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import cli_json, flag_dir, popen_cli, run_cli, wait_for
from test_crash_ops import _clean, _objects_in
from test_crash_push_orphans import _store


def _key(d, sid: str) -> bytes:
    with open(os.path.join(d.home, "keys", "sessions", sid + ".key"), "rb") as f:
        return f.read()


def _rekeying(d, sid: str) -> bool:
    """Whether a rekey of `sid` is under way, or cut short and not finished yet: its record (keys.py
    set_rekey_pending), which the rekey writes first and removes last (KeySwitch.finish: after its switch's push)."""
    return os.path.exists(os.path.join(d.home, "keys", "sessions", sid + ".rekey"))


def _after_gc(make_daemon, what: str, point: str | None, kind: str = "folder", hold: str | None = None) -> int:
    """A session pushed, then shared (`what` "share") or shared and rekeyed ("rekey"), killed at `point` on
    the way and started again (which finishes it); then gc'd: how many objects the store (of `kind`) holds.
    `hold`: a pause point of the rekey's resume at the start, where it is held while `gc --grace 0` runs."""
    with _store(kind) as (url, held):
        d = make_daemon(url)
        d.start()
        sid = d.client().create_session(name="shared", checkpoint_interval=10**9)["id"]
        d.client().append(sid, "user", "first")
        d.client().sync(sid, wait=True)
        if what == "rekey":
            d.client().share(sid, write=True)
        old = _key(d, sid)
        args = ("share", sid, "--write") if what == "share" else ("unshare", sid)
        if point is not None:
            d.env["SESSIOND_CRASH_AT"] = point
            d.restart()
            res = run_cli(d.home, *args, "--json")
            assert res.returncode != 0, res.stdout  # the daemon died on the way
            assert d.proc.wait(10) == 137
            d.env.pop("SESSIOND_CRASH_AT")
            flag = os.path.join(flag_dir(), "held") if hold is not None else ""
            if hold is not None:
                d.env["SESSIOND_TEST_PAUSE"] = f"{hold}:{flag}"
            d.start()  # the start finishes it (a share: its resumed push; a rekey: its first pull)
            if hold is not None:
                wait_for(lambda: os.path.exists(flag), timeout=20, what=f"the resumed rekey held at {hold}")
                # held, not finished: at its switch, with the key rotated already (no sign of its end)
                assert _rekeying(d, sid) and (_key(d, sid) != old) == (hold != "rekey.resuming")
                cli_json(d.home, "gc", "--grace", "0")  # (it must free nothing the rekey or the slots still name)
                os.unlink(flag)
                d.env.pop("SESSIOND_TEST_PAUSE")
            if what == "rekey":
                # finished: its record gone, the last of it (the key is rotated, and the new slot written, before
                # its push under the new key lets go the manifest before it: a gc ahead of that push leaves it)
                wait_for(
                    lambda: _key(d, sid) != old and not _rekeying(d, sid),
                    timeout=30,
                    what="the rekey finished at the start",
                )
        else:
            cli_json(d.home, *args)
        if what == "share":
            d.client().share(sid, write=True)
        wait_for(lambda: run_cli(d.home, "verify", "--json").returncode == 0, timeout=20, what="verify clean")
        cli_json(d.home, "gc", "--grace", "0")
        _clean(d)
        n = len(held())
        d.stop()
        return n


@pytest.mark.parametrize("kind", ["folder", "relay", "kubo"])
@pytest.mark.parametrize(
    "what,point", [("share", "members:put"), ("rekey", "rekey:notice_put"), ("rekey", "rekey:notice_set")]
)
def test_a_slot_write_killed_after_its_object_leaves_nothing_after_gc_and_frees_nothing_named(
    make_daemon, what, point, kind
):
    crashed = _after_gc(make_daemon, what, point, kind)
    clean = _after_gc(make_daemon, what, None, kind)
    assert crashed == clean, (crashed, clean)


def _gc_while_held(make_daemon, point: str) -> int:
    """A shared session rekeyed (`unshare`, which holds no push lock), held at `point` (its object put, the
    slot not written) while `gc --grace 0` runs, then let go; gc'd again: how many objects the store holds."""
    folder = tempfile.mkdtemp(prefix="sd-store-")
    try:
        d = make_daemon(f"file://{folder}")
        d.start()
        sid = d.client().create_session(name="shared", checkpoint_interval=10**9)["id"]
        d.client().append(sid, "user", "first")
        d.client().sync(sid, wait=True)
        d.client().share(sid, write=True)
        flag = os.path.join(flag_dir(), "held")
        d.env["SESSIOND_TEST_PAUSE"] = f"{point}:{flag}"
        d.restart()
        unshare = popen_cli(["unshare", sid, "--json", "--home", d.home], env=dict(os.environ), stdout=subprocess.PIPE)
        try:
            wait_for(lambda: os.path.exists(flag), timeout=20, what=f"the rekey held at {point}")
            held = cli_json(d.home, "gc", "--grace", "0")
            os.unlink(flag)
            out, _ = unshare.communicate(timeout=60)
        finally:
            if unshare.poll() is None:
                unshare.kill()
                unshare.wait()
        assert unshare.returncode == 0, out
        assert held["kept"] >= 1, held  # what the slot was about to name: kept, not freed
        wait_for(lambda: run_cli(d.home, "verify", "--json").returncode == 0, timeout=20, what="verify clean")
        cli_json(d.home, "gc", "--grace", "0")
        _clean(d)
        n = len(_objects_in(folder))
        d.stop()
        return n
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("point", ["rekey.notice_put", "members.put"])
def test_a_gc_between_an_object_put_and_the_slot_naming_it_frees_nothing_named(make_daemon, point):
    held = _gc_while_held(make_daemon, point)
    clean = _after_gc(make_daemon, "rekey", None)
    assert held == clean, (held, clean)


@pytest.mark.parametrize("hold", ["rekey.resuming", "rekey.switching", "rekey.announced"])
@pytest.mark.parametrize("point", ["rekey:notice_put", "rekey:notice_set"])
def test_a_gc_while_a_resumed_rekey_is_under_way_frees_nothing_it_needs_and_the_next_frees_the_rest(
    make_daemon, point, hold
):
    """A rekey killed at `point` is finished by the first pull after the start; a gc run while that resume is
    held at `hold` (before it read or did anything: the notice or the killed attempt's object still a gc
    candidate; at its switch, the keys rotated and the new slot named, not written; or written, the log not yet
    pushed under the new key, where `verify` is clean already) frees nothing still named (the check: `verify`
    and `doctor` clean after it), and what the resume lets go after it (the manifest its push leaves) the next
    gc frees: as many objects as a rekey never killed."""
    held = _after_gc(make_daemon, "rekey", point, hold=hold)
    clean = _after_gc(make_daemon, "rekey", None)
    assert held == clean, (held, clean)
