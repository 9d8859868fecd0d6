"""A members slot the store lost is written again once, however many ask at the same time.

The follower's pull (under the session's rekey lock), `sessiond repair` (engine.repair, without it) and the
republisher each call Members.restore. Each used to read the store, find the slot lost and write it again: two at
once wrote two new revisions, the second racing the first (refused as stale, then written past it). One restore of
a session runs at a time now; one asked meanwhile waits for it and takes its result (sync/slotrestore.py)."""

from __future__ import annotations

import asyncio
import os

from devices import count_calls
from sessiond.sync.bounded import KeyedRuns
from sessiond.sync.members import announce_key

HOUR = {"interval": 3600.0, "poll_interval": 3600.0}  # (A's follower does not restore the slot meanwhile)


async def lost_slot(devices) -> tuple[str, bytes]:
    """A session of A's shared read-write (its members slot written), then the slot's entry deleted from the
    store: (session, the slot's key)."""
    await devices.open(a=HOUR)
    a = devices.a
    await a.start()
    sid = (await devices.dba.create_session({"name": "lost"}))["id"]
    await devices.dba.append_messages(sid, [{"role": "user", "content": "a1"}])
    await a.share(sid, write=True, passphrase=None, expires_in=None)
    ws = a.ctx.keys.write_secret(sid)
    assert ws is not None
    pk = b"\xed" + bytes(announce_key(ws).verify_key)
    assert await a.ctx.store.get_head(pk) is not None
    os.remove(os.path.join(devices.store_path, "heads", pk.hex()))
    return sid, pk


async def test_two_restores_at_once_write_the_lost_slot_once(devices):
    sid, pk = await lost_slot(devices)
    a = devices.a
    before = (await devices.dba.remote(sid))["members_rev"]
    writes = count_calls(a.ctx.store, "set_head")

    async def as_the_follower() -> bool:  # (Follower._restore: the rekey lock held throughout)
        async with a.ctx.rekey_lock(sid):
            return await a.members.restore(sid)

    # the follower's pull and `sessiond repair` (no rekey lock) at once, and a third plain call
    got = await asyncio.gather(as_the_follower(), a.members.restore(sid), a.repair(sid))
    assert got[:2] == [True, True], got  # (the one that waited took the other's result: written)
    slot_writes = [e for e in writes if e.pk == pk]
    assert len(slot_writes) == 1, [e.revision for e in slot_writes]
    entry = await a.ctx.store.get_head(pk)
    assert entry is not None and entry.revision == before + 1
    assert (await devices.dba.remote(sid))["members_rev"] == before + 1
    # and once written, a restore after finds it whole: nothing written
    assert await a.members.restore(sid) is False
    assert len([e for e in writes if e.pk == pk]) == 1


async def test_a_restore_cut_short_is_run_again_by_one_that_waited_for_it():
    """The first caller cancelled (a poll's pull cut short at the daemon's stop): one that waited runs it anew rather
    than taking the cancellation as its own; a waiter cancelled leaves the run alone."""
    runs = KeyedRuns[str]()
    started, go = asyncio.Event(), asyncio.Event()
    calls: list[str] = []

    async def make(name: str) -> str:
        calls.append(name)
        started.set()
        await go.wait()
        return name

    first = asyncio.create_task(runs("s", lambda: make("first")))
    await started.wait()
    second = asyncio.create_task(runs("s", lambda: make("second")))
    third = asyncio.create_task(runs("s", lambda: make("third")))
    await asyncio.sleep(0)  # (a turn of the loop: both wait on the first's run)
    first.cancel()
    third.cancel()
    go.set()
    assert await second == "second"
    assert calls == ["first", "second"]
    assert first.cancelled() and third.cancelled()
    assert "s" not in runs
