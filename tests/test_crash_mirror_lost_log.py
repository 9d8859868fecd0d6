"""kill -9 of a device on a mirror of two folder stores while a write to them is under way (`store.write` held), the
second store having lost this device's log of a session (its head file gone: a host restored from a backup). After
the restart the log reaches that store again whole (a sync's repair check, sync/lostlog.py, which waits for a write
under way; or the push of the message the kill cut, which this test does not tell apart): `sync --wait`, verify and
doctor clean, and a device reading the second store alone imports a code made after the restart with every
acknowledged message."""

from __future__ import annotations

import os

from conftest import wait_for
from killing import clean, contents


def test_a_kill_while_a_mirror_write_is_under_way_over_a_log_lost_on_one_store_is_repaired(make_daemon, tmp_path):
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    a = make_daemon([f"file://{first}", f"file://{second}"]).start()
    sid = a.client().create_session(name="lost on one")["id"]
    a.client().append(sid, "user", "m0")
    a.client().share(sid, write=True)
    assert a.client().sync(sid, wait=True, timeout=30)["complete"]
    heads = os.path.join(second, "heads")
    lost = [h for h in os.listdir(heads) if not h.startswith("ed")]  # (the members slot kept: its name is 0xed...)
    assert lost
    for h in lost:
        os.remove(os.path.join(heads, h))

    flag = str(tmp_path / "writing")
    a.env["SESSIOND_TEST_PAUSE"] = f"store.write:{flag}"
    a.restart()
    a.client().append(sid, "user", "m1")
    a.client().sync(sid)
    wait_for(lambda: os.path.exists(flag), timeout=20, what="a write to a store under way")
    a.kill()
    a.env.pop("SESSIOND_TEST_PAUSE")
    a.start()

    said: dict = {}
    wait_for(lambda: clean(a, said), timeout=30, what=f"sync --wait, verify and doctor clean ({said})")
    assert [h for h in os.listdir(heads) if not h.startswith("ed")]  # (the log's head written there again)
    code = a.client().share(sid, write=True)["code"]
    b = make_daemon(f"file://{second}").start()
    b.client().import_code(code)
    assert {"m0", "m1"} <= set(contents(b, sid)), contents(b, sid)
