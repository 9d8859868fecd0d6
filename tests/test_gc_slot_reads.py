"""gc's reads of the members slots (sync/gc.py): a shared session's members object is read only when its slot
moved since this process last read or wrote it (the frozen logs it names, which gc keeps live, are then known
as of that read), counted as the objects gc asks the store for. And the follower's write-back, which compares
the slot's frozen logs with those noted in the database, counted as its reads of the session's row."""

from __future__ import annotations

import os

import pytest

from devices import count_gets
from test_members_gc import _files, _named, _slot_object, _written_over_unseen


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
        assert reads.count(sid) == 1, reads  # main: 2, the write-back's own read of the row


async def _let_back_in(devices) -> tuple[str, dict]:
    """A's session shared read-write with B; B drops A by a rekey (A's log frozen in the new slot: its manifest
    then, A's own object) and lets it back in with a new code; A writes twice, its head leaving that manifest
    (a candidate of A's, pinned by the slot) and the one after it (named by nothing). (session, A's frozen log)."""
    from sessiond.sync.frozen import decode_frozen

    await devices.open()
    a, b = devices.a, devices.b
    await a.start()
    await b.start()
    sid = await devices.shared("let back in", write=True)
    await devices.dbb.append_messages(sid, [{"role": "assistant", "content": "B was here"}])
    assert (await b.sync_now(sid, wait=True, timeout=20))["complete"]
    assert (await a.sync_now(sid, wait=True, timeout=20))["complete"]
    await b.rekey(sid, drop=[devices.dba.device_id])
    await a.sync_now(sid, wait=True, timeout=20)
    assert (await devices.dba.get_session(sid))["access"] == "revoked"
    await a.import_code((await b.share(sid, write=True, passphrase=None, expires_in=None))["code"], None)
    for text in ("A back", "A again"):
        await devices.dba.append_messages(sid, [{"role": "user", "content": text}])
        assert (await a.sync_now(sid, wait=True, timeout=20))["complete"]
    mine = [f for f in decode_frozen((await devices.dba.remote(sid))["frozen"]) if f["k"] == a.keys.head_pk(sid)]
    assert len(mine) == 1, mine
    return sid, mine[0]


@pytest.mark.parametrize("gone", [False, True])
async def test_gc_frees_what_nothing_names_when_its_own_frozen_manifest_is_gone(devices, tmp_path, gone):
    """A frozen log of this device's whose manifest the store no longer holds (an older gc freed it, or the
    store lost it) names nothing anyone can read: gc kept every candidate of the session, reporting that its
    heads could not be read, at every run. Its candidates are freed now unless a head or a frozen log that can
    be read names them; a frozen manifest still there is kept, with what it names."""
    sid, frozen = await _let_back_in(devices)
    a = devices.a
    objects = os.path.join(devices.store_path, "objects")
    held = _files(devices.store_path)
    assert frozen["h"] in held
    if gone:
        os.remove(next(os.path.join(p, f) for p, _, fs in os.walk(objects) for f in fs if f == frozen["h"].hex()))
    due = [bytes(r["hash"]) for r in await devices.dba.released.due(1e18) if r["session_id"] == sid]
    assert due, due
    done = await a.gc(grace=0, dry_run=False)
    assert "errors" not in done["stores"][0], done  # main, gone: "kept its N objects, its heads could not be read"
    named = await a.collector.live(sid)  # every head and the frozen log, as gc reads them
    assert frozen["h"] in named
    left = _files(devices.store_path)
    assert [h for h in due if h not in named] and all(h not in left for h in due if h not in named), done
    assert named - ({frozen["h"]} if gone else set()) <= left  # what anything names stays
    assert (frozen["h"] in left) is not gone
    assert (await a.verify(sid))["ok"]
