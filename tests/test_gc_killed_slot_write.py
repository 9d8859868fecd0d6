"""A device killed between its write of a members slot and its note that the slot names what it put
(SyncContext.named: the object still a gc candidate, as noted before its put), its copy of the session then
deleted (`rm`) and gc run: gc reads the members slot of a deleted session as an orphan (Released.orphan_slots),
and a read that finds the slot naming the object keeps it. A read that failed (the store's answer damaged, or
none) left the object a candidate of a session gc reads no heads of, and gc freed it: every device importing the
session afterwards failed on the slot. Shown with real daemons over a folder store, the slot's entry damaged
while B reads it, put back before C imports."""

from __future__ import annotations

import json
import os
import shutil

from conftest import cli_json, run_cli
from test_members_lost import slot_file


def test_a_slot_write_killed_before_its_note_then_rm_and_a_gc_that_cannot_read_the_slot_frees_nothing_named(
    make_daemon, store_dir
):
    url = "file://" + store_dir
    a, b = make_daemon(url).start(), make_daemon(url).start()
    sid = a.client().create_session(name="joined", checkpoint_interval=10**9)["id"]
    a.client().append(sid, "user", "first")
    code = a.client().share(sid, write=True)["code"]
    a.stop()  # (A would write a slot it finds damaged again: Members.restore)
    b.env["SESSIOND_CRASH_AT"] = "members:set"  # B's import lists B: the slot written over, the write not noted
    b.restart()
    res = run_cli(b.home, "import", "--json", input=code)
    assert res.returncode != 0, res.stdout  # the daemon died answering it
    assert b.proc.wait(10) == 137
    b.env.pop("SESSIOND_CRASH_AT")
    slot = slot_file(store_dir, a, sid)
    shutil.copy(slot, slot + ".kept")
    with open(slot, "r+b") as f:  # (its signature damaged: every read of it fails, B's start's too)
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0xFF]))
    b.start()
    cli_json(b.home, "rm", sid, "--force")
    gc = json.loads(run_cli(b.home, "gc", "--grace", "0", "--json").stdout)
    os.replace(slot + ".kept", slot)  # the store answers the slot again
    c = make_daemon(url).start()
    c.client().import_code(code)  # main: the members object the slot names was freed by B's gc
    assert [m["content"] for m in c.client().messages(sid)["messages"]] == ["first"], gc
    assert c.client().verify(sid)["ok"]
    # once B's gc reads the slot, the object it names is no candidate (freed by no later gc)
    cli_json(b.home, "gc", "--grace", "0")
    c.client().import_code(a.start().client().share(sid)["code"])
    assert c.client().verify(sid)["ok"]
    for d in (a, b, c):
        d.stop()
