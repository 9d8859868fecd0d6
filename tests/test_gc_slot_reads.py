"""gc's reads of the members slots (sync/gc.py): a shared session's members object is read only when its slot
moved since this process last read or wrote it (the frozen logs it names, which gc keeps live, are then known
as of that read), counted as the objects gc asks the store for. And the follower's write-back, which compares
the slot's frozen logs with those noted in the database, counted as its reads of the session's row."""

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


async def test_a_pull_reads_the_noted_frozen_logs_from_the_database_no_more_than_its_session_row(devices, tmp_path):
    """The follower's write-back compared the slot's frozen logs with those noted in the database by reading the
    session's `remotes` row again at every pull of a writer listed in the slot, where the pull's own read of
    that row at its start holds them (what the pull's read of the slot noted since is the slot's own)."""
    from devices import count_calls

    await devices.open()
    a, b = devices.a, devices.b
    await a.start()
    sid = await devices.shared("write-back", write=True)
    await devices.dbb.append_messages(sid, [{"role": "assistant", "content": "B was here"}])
    await b.push(sid)  # (B not started: no pull of its own meanwhile)
    reads = count_calls(devices.dbb, "remote")
    for text in ("one", "two"):
        await devices.dba.append_messages(sid, [{"role": "user", "content": text}])
        assert (await a.sync_now(sid, wait=True, timeout=20))["complete"]
        reads.clear()
        assert await b.follower.pull(sid) == 1
        # the pull's read at its start and its apply's under the rekey lock (generation.py's Generations.same, which a
        # rekey's freeze needs read fresh); the write-back's own read of the row for the frozen logs made it 3
        assert reads.count(sid) == 2, reads
