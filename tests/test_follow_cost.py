"""What a follower's pull costs (issue 17, the follower's CPU): it reads the members slot's object only
when the slot changed, and each member's head once."""

from __future__ import annotations

from devices import count_calls
from sessiond.stores.file import FileStore


async def test_a_pull_reads_the_members_object_only_when_the_slot_changed_and_each_head_once(devices):
    store_b = FileStore(devices.store_path)
    a, b = await devices.open(store_b=store_b)
    dba, dbb = devices.dba, devices.dbb
    await a.start()
    sid = await devices.shared("followed", write=True)
    await b.follower.pull(sid)
    gets, heads = count_calls(store_b, "get"), count_calls(store_b, "get_head")

    await dba.append_messages(sid, [{"role": "user", "content": f"news {i}"} for i in range(3)])
    await a.sync_now(sid, wait=True, timeout=10)
    assert await b.follower.pull(sid) == 3
    # the members slot's head and A's head, each read once; A's manifest and its new page
    assert len(heads) == 2 and len(set(heads)) == 2, heads
    assert len(gets) == 2, gets

    # a new member in the slot: its object is read again, and the new member followed
    newcomer = {"head_pk": b"\xed" + bytes(range(32)), "device_id": "newcomer"}
    await a.members.ensure_member(sid, extra=[newcomer])
    gets.clear()
    await b.follower.pull(sid)
    assert len(gets) == 1  # the members object (nothing new in A's log)
    assert newcomer["head_pk"] in {bytes(p["head_pk"]) for p in await dbb.peers(sid)}
    assert len(await dbb.list_messages(sid)) == 4
