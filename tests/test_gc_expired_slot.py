"""gc dropped its records of a deleted session's members slot when the slot read as gone (Released.slot_settled).
On Kubo a slot reads as gone when the DHT forgot its IPNS record (48 h after its last put) or the record is past
its end of life, while the objects it names are still pinned: a device still following the session puts the
record again (sync/reput.py) and writes the slot over later, and the members object this device put, named by
nothing then, was a candidate no more: pinned for good. Shown with the loopback Kubo node (tests/servers/kubo.py):
the records stay while what they name is still in the store, and go once it is freed."""

from __future__ import annotations

import os
import time

import pytest

from clocks import DAY, in_process
from servers.kubo import Node, make_rpc_app
from servers.s5portal import Running
from sessiond.storage.clock import set_test_clock
from sessiond.stores.ipns import name_of
from sessiond.stores.kubo import KuboStore
from sessiond.sync import gc as gc_module
from test_members_gc import _slot_object


async def _gone_from_kubo(devices, node: Node, rpc: Running, title: str):
    """Over the loopback Kubo node: A shares a session read-write with B (which lists itself in the members slot),
    writes the slot (naming A's object), deletes the session; the DHT then forgets the slot's record: it reads as
    gone. (A, B, the session, A's members object, the slot's announce key)"""
    url = f"ipfs+http://127.0.0.1:{rpc.port}"
    a, b = await devices.open(store_a=KuboStore(url), store_b=KuboStore(url))
    await a.start()  # (B not started: nothing of it runs but what the test calls)
    sid = await devices.shared(title, write=True)  # B imports: it lists itself in the slot
    assert (await a.sync_now(sid, wait=True, timeout=20))["complete"]
    await a.members.ensure_member(sid, extra=[{"head_pk": b"\xed" + os.urandom(32), "device_id": "c"}])
    mine = await _slot_object(a, sid)  # the slot names A's members object
    announce_pk = bytes((await devices.dba.remote(sid))["announce_pk"])
    name = name_of(announce_pk)
    assert await devices.dba.delete_session(sid, head_pk=a.keys.head_pk(sid))
    node.max_record_age = 60.0
    node.received[name] = time.monotonic() - 3600  # the DHT forgot the slot's record: it reads as gone
    return a, b, sid, mine, announce_pk


async def _written_over(node: Node, b, sid: str, announce_pk: bytes, mine: bytes) -> None:
    """B puts the slot's record back (its reput), then writes the slot over: A's object `mine` named by nothing."""
    record = node.records[name_of(announce_pk)][-1][1]
    assert await b.ctx.store.put_record(b"\xed" + announce_pk, record)
    await b.members.ensure_member(sid, extra=[{"head_pk": b"\xed" + os.urandom(32), "device_id": "d"}])
    assert await _slot_object(b, sid) != mine


async def test_a_deleted_sessions_slot_forgotten_by_kubos_dht_keeps_its_records_until_what_it_named_is_freed(
    devices, monkeypatch
):
    node = Node()
    rpc = await Running(make_rpc_app(node)).start()
    try:
        a, b, sid, mine, announce_pk = await _gone_from_kubo(devices, node, rpc, "expired slot")
        assert await a.ctx.store.get_head(b"\xed" + announce_pk) is None
        await a.gc(grace=0, dry_run=False)
        assert mine in node.pins  # named by the slot as last seen: kept
        assert await devices.dba.released.orphan_slots(), "main: the slot's records dropped"

        await _written_over(node, b, sid, announce_pk, mine)
        monkeypatch.setattr(gc_module, "SLOT_GONE_READ_EVERY", 0.0)  # (read again: as once that long has passed)
        await a.gc(grace=0, dry_run=False)
        assert mine not in node.pins  # main: left pinned for good, forgotten by A's first gc
        assert await devices.dba.released.orphan_slots() == []  # freed: its records gone, the slot read no more
    finally:
        await devices.close()
        await rpc.stop()


async def test_a_dry_run_counts_what_a_deleted_sessions_slot_gone_for_good_lets_go(devices):
    """On a store whose heads do not expire, a deleted session's members slot read as gone lets go what this
    device put for it (Released.slot_gone); a dry run counts it as the run frees it (it counted none of it)."""
    a, _ = await devices.open()
    await a.start()
    sid = (await devices.dba.create_session({"name": "slot gone"}))["id"]
    await devices.dba.append_messages(sid, [{"role": "user", "content": "first"}])
    await a.share(sid, write=True, passphrase=None, expires_in=None)
    mine = await _slot_object(a, sid)
    slot = b"\xed" + bytes((await devices.dba.remote(sid))["announce_pk"])
    assert await devices.dba.delete_session(sid, head_pk=a.keys.head_pk(sid))
    os.remove(os.path.join(devices.store_path, "heads", slot.hex()))  # (the store lost it)
    dry = await a.gc(grace=0, dry_run=True)
    assert await devices.dba.released.orphan_slots()  # (a dry run changes nothing)
    done = await a.gc(grace=0, dry_run=False)
    assert not await a.ctx.store.has(mine)  # gone for good: what it named freed
    assert await devices.dba.released.orphan_slots() == []
    # main: the run neither freed it nor counted it; the dry run, once the run let it go, did not count it
    assert dry["objects"] == done["objects"] >= 1, (dry, done)


async def test_a_deleted_sessions_slot_read_as_gone_on_kubo_is_not_read_again_at_every_gc(devices, monkeypatch):
    """A slot read as gone on Kubo keeps its records while what it names is pinned (above); gc read it again at
    every run (a resolve of its name, which on a real node waits on the DHT, and a look for each object), though
    nothing here could have changed it: it is read again once SLOT_GONE_READ_EVERY has passed since it read as gone
    (then, the record put back and written over, what it named is freed). Counted as the requests the node gets."""
    node = Node()
    rpc = await Running(make_rpc_app(node)).start()
    try:
        a, b, sid, mine, announce_pk = await _gone_from_kubo(devices, node, rpc, "slot gone on kubo")
        name = name_of(announce_pk)

        def reads() -> int:
            return sum(name in path for _, path, _ in node.requests)

        node.requests.clear()
        await a.gc(grace=0, dry_run=False)
        assert reads() == 1 and mine in node.pins, node.requests
        for _ in range(2):
            node.requests.clear()
            await a.gc(grace=0, dry_run=False)
            assert reads() == 0, node.requests  # main: its name resolved again at every run
        assert await devices.dba.released.orphan_slots()  # (its records kept)

        await _written_over(node, b, sid, announce_pk, mine)
        monkeypatch.setattr(gc_module, "SLOT_GONE_READ_EVERY", 0.0)  # (as once that long has passed)
        await a.gc(grace=0, dry_run=False)
        assert mine not in node.pins
        assert await devices.dba.released.orphan_slots() == []
    finally:
        await devices.close()
        await rpc.stop()


@pytest.mark.parametrize("restarted", [False, True], ids=["running", "restarted"])
async def test_a_slot_read_as_gone_is_read_again_a_day_on_whatever_the_wall_clock_did(
    devices, monkeypatch, tmp_path, restarted
):
    # gc reads a slot read as gone again once SLOT_GONE_READ_EVERY has passed since, judged by the wall clock: a
    # clock stepped back two days since (an NTP step; or, restarted, a clock two days ahead set right while no
    # daemon ran) held that read for the two days more, and what the slot no longer named stayed pinned
    path = str(tmp_path / "clock")
    clock = in_process(monkeypatch, path, 2 * DAY if restarted else 0.0)
    node = Node()
    rpc = await Running(make_rpc_app(node)).start()
    try:
        a, b, sid, mine, announce_pk = await _gone_from_kubo(devices, node, rpc, "slot gone, clock stepped")
        await a.gc(grace=0, dry_run=False)  # (read as gone: read again a day on)
        assert mine in node.pins and await devices.dba.released.orphan_slots()
        await _written_over(node, b, sid, announce_pk, mine)
        set_test_clock(path, 0.0 if restarted else -2 * DAY)
        if restarted:
            clock.configure()  # (the daemon's start, its clock set right meanwhile)
        monkeypatch.setattr(gc_module, "SLOT_GONE_READ_EVERY", 0.0)  # (as once that long has passed)
        await a.gc(grace=0, dry_run=False)
        assert mine not in node.pins  # main: the slot not read again until the clock caught up, two days on
        assert await devices.dba.released.orphan_slots() == []
    finally:
        await devices.close()
        await rpc.stop()
