"""A device away through k rekeys catches up in one pull, reading a number of members slots in proportion to k.

Each notice it takes is checked (sync/rekeyproof.py check_notice) by following the chain of the slots after it to
the key the author's log moved to. Was: every notice's check read that chain again from its start, so a device k
rekeys behind read about k*k/2 slots to catch up (16 behind: 184 slot reads in one pull; bench/rekeycatchup.py).
Now the links of the chain read for one notice (a slot, opened with a key, holding a notice whose box for this
device gives the next key) serve the next notices' checks; the slot where the chain ended is read again each time
(a rekey since may have added a notice to it), and each notice taken is still read from its slot and checked."""

from __future__ import annotations

from devices import count_calls
from sessiond.sync.manifest import CLAIMS_KEPT

REKEYS = CLAIMS_KEPT  # the most rekeys by one device whose notices its log still claims (16)


async def test_a_device_many_rekeys_behind_catches_up_in_one_pull_reading_slots_in_proportion(devices):
    a, b = await devices.open()
    await a.start()
    sid = await devices.shared("rekeyed often", write=True)
    await devices.dbb.append_messages(sid, [{"role": "user", "content": "from b"}])
    for i in range(REKEYS):
        await a.rekey(sid)
        await devices.dba.append_messages(sid, [{"role": "user", "content": f"after rekey {i}"}])
    assert (await a.sync_now(sid, wait=True, timeout=30))["complete"]
    await a.stop()  # (nothing of A reads the store meanwhile)
    reads = count_calls(b.members, "read_slot")
    await b.pull(sid)
    assert b.ctx.keys.session_key(sid) == a.ctx.keys.session_key(sid)  # every notice taken, in this one pull
    got = [m["content"] for m in await devices.dbb.list_messages(sid, limit=1000)]
    assert [t for t in got if t.startswith("after rekey")] == [f"after rekey {i}" for i in range(REKEYS)]
    # per notice: its slot read by the pull, the chain's end read again by its check, the new slot by the switch
    # and its push; and the chain once from the first notice (was: k*(k+1)/2 + 3k, 184 here)
    assert len(reads) <= 5 * REKEYS + 4, len(reads)
