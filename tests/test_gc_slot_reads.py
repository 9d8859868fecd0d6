"""gc's reads of the members slots (sync/gc.py): a shared session's members object is read only when its slot
moved since this process last read or wrote it (the frozen logs it names, which gc keeps live, are then known
as of that read), counted as the objects gc asks the store for."""

from __future__ import annotations

from devices import count_gets
from test_members_gc import _named, _slot_object, _written_over_unseen


async def test_gc_reads_a_members_object_again_only_when_its_slot_moved(devices, tmp_path):
    sid, mine, held = await _written_over_unseen(devices, tmp_path)
    a = devices.a
    other = next(s for s in await devices.dba.session_ids() if s != sid)
    moved = await _slot_object(a, sid)  # B's members object: the slot moved since A wrote it
    gets = count_gets(a.ctx.store)
    await a.gc(grace=0, dry_run=False)
    assert gets.count(moved) == 1, gets  # moved: read (once, not once per reading of the session's heads)
    assert mine not in held() and moved in held()
    for text in ("three", "four"):  # (a candidate due again: the second run reads the heads)
        await devices.dba.append_messages(other, [{"role": "user", "content": text}])
        await a.push(other)
    gets.clear()
    done = await a.gc(grace=0, dry_run=False)
    assert done["objects"] >= 1, done
    assert moved not in gets, gets  # main: read again at every run, the slot as it was
    assert held() == set().union(*[await _named(a, s) for s in await devices.dba.session_ids()])
