"""Members.ensure_member read the session's `remotes` row twice at every call: once for the frozen logs noted
there (known_frozen), and again for its members revision (a write) or to note this device listed (_listed),
where the one read at its start holds both (and a third time, through ctx.store_for, for its store). Counted
as its reads of the row, as test_gc_slot_reads counts a pull's: those made in the call's own task (the daemon's
follower may pull the session meanwhile: 1 run seen counted its read too)."""

from __future__ import annotations

import os

from devices import count_calls


async def test_ensure_member_reads_the_sessions_row_once(devices, tmp_path):
    await devices.open()
    a = devices.a
    await a.start()
    sid = await devices.shared("row reads", write=True)  # (B imported it: it lists itself in the slot)
    assert (await a.sync_now(sid, wait=True, timeout=20))["complete"]
    reads = count_calls(devices.dba, "remote", this_task=True)  # (not a poll's pull meanwhile)
    rev = await a.members.ensure_member(sid)  # everyone listed: nothing written
    assert reads.count(sid) == 1, reads  # main: 3 (known_frozen, ctx.store_for, then _listed)
    reads.clear()
    other = {"head_pk": b"\xed" + os.urandom(32), "device_id": "another-device"}
    assert await a.members.ensure_member(sid, extra=[other]) == rev + 1  # a writer added: the slot written
    assert reads.count(sid) == 1, reads  # main: 3 (known_frozen, ctx.store_for, then the members revision)
    listed = await a.members.read_members(
        a.ctx.store, sid, a.ctx.keys.session_key(sid), bytes((await devices.dba.remote(sid))["announce_pk"])
    )
    assert listed[0] == rev + 1 and other["head_pk"] in {m["head_pk"] for m in listed[1]}
    assert (await devices.dba.remote(sid))["members_rev"] == rev + 1
