"""A rekey on a device whose store serves the members slot older than the device has read it.

A and B write a session; C joins by B's code (a writer, in the slot's next revision, which A reads). The store then
serves the slot as it was before C came (its host restored a backup). A's `rekey` took the slot as served: C, no
writer in it, was given no key and left out, though A had read C's join (it errs toward shutting out). The rekey
now notices that the slot is older than the one this device read, writes it again from what this device knows (as
the follower's restore does for a slot the store lost), reads it again, and keeps C."""

from __future__ import annotations

import os
import shutil

from conftest import cli_json, wait_for
from killing import session_key, shared_writers
from sessiond.sync.members import announce_key
from test_rekey_drop_since import _contents, _lists


def test_a_rekey_over_a_slot_served_older_than_this_device_read_keeps_the_writers_let_in_since(make_daemon, store_dir):
    a, b, sid = shared_writers(make_daemon, f"file://{store_dir}", "stale slot")
    assert a.client().sync(sid, wait=True, timeout=30)["complete"]
    with open(os.path.join(a.home, "keys", "sessions", f"{sid}.write"), "rb") as f:
        slot = os.path.join(store_dir, "heads", (b"\xed" + bytes(announce_key(f.read()).verify_key)).hex())
    old = f"{slot}.old-{os.getpid()}"
    shutil.copyfile(slot, old)

    c = make_daemon(f"file://{store_dir}").start()
    c.client().import_code(b.client().share(sid, write=True)["code"])  # B lets C in
    c.client().append(sid, "user", "from c")
    assert c.client().sync(sid, wait=True, timeout=30)["complete"]
    b_id, c_id = (cli_json(d.home, "status")["device_id"] for d in (b, c))
    wait_for(lambda: _lists(a, sid, c_id), timeout=30, what="A lists C as a writer")
    os.replace(old, slot)  # the store serves the slot from before C came

    res = a.client().rekey(sid)
    # main: kept == [b_id], C given no key
    assert sorted(res["kept"]) == sorted([b_id, c_id]) and not res["dropped"], res
    key = session_key(a, sid)
    a.client().append(sid, "user", "after the rekey")
    assert a.client().sync(sid, wait=True, timeout=30)["complete"]
    wait_for(
        lambda: (
            c.client().sync(sid, wait=True, timeout=10)
            and session_key(c, sid) == key
            and "after the rekey" in _contents(c, sid)
        ),
        timeout=30,
        what="C takes the rekey and reads on",
    )
