"""`sessiond gc` read the members slot of every shared session removed here that this device had put a
members object for, at every run, forever: a slot that still named this device's object, or that was gone
from the store, kept its record (slot_objects), and orphan_slots listed it again at the next run, so gc's
cost grew with every session ever removed. A removed session's slot is now read until it is settled: what
it no longer names let go (freed after the grace), what it names left in the store, the record dropped, and a
slot found gone dropped too; the next runs do not ask the store for it. Counted as the registry reads a
loopback S5 portal answers."""

from __future__ import annotations

from portalstore import s5, served_portal


async def _shared_then_removed(devices, name: str) -> bytes:
    """A session of A's shared read-write, then removed here (`rm`): its members slot's registry key."""
    sid = (await devices.dba.create_session({"name": name}))["id"]
    await devices.dba.append_messages(sid, [{"role": "user", "content": "first"}])
    await devices.a.share(sid, write=True, passphrase=None, expires_in=None)
    slot = b"\xed" + bytes((await devices.dba.remote(sid))["announce_pk"])
    assert await devices.dba.delete_session(sid, head_pk=devices.a.keys.head_pk(sid))
    return slot


async def test_a_removed_sessions_slot_is_not_read_again_once_settled(devices, tmp_path):
    async with served_portal() as p:
        a, _ = await devices.open(store_a=s5(p, tmp_path, "a"), store_b=s5(p, tmp_path, "b"))
        await a.start()
        named = await _shared_then_removed(devices, "its slot still names A's object")
        gone = await _shared_then_removed(devices, "its slot gone")
        held = p.registry[named][-1].data[1:33]
        del p.registry[gone]  # (the store lost it)
        slots = {named, gone}

        p.head_reads.clear()
        await a.gc(grace=0, dry_run=False)
        assert set(p.head_reads) & slots == slots, p.head_reads  # each read once after its removal
        for _ in range(2):
            p.head_reads.clear()
            await a.gc(grace=0, dry_run=False)
            assert set(p.head_reads) & slots == set(), p.head_reads  # main: both read again at every run
        assert p.registry[named][-1].data[1:33] == held and held in p.blobs  # what the slot names stays
