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


async def test_a_device_away_through_more_rekeys_than_its_author_claims_is_told_to_import_a_new_code(devices):
    """An author's log keeps the claims of its last CLAIMS_KEPT rekeys only (sync/manifest.py): a device away
    through more rekeys by one device cannot check the first notice, its claim gone from the author's log. Was: told
    the notice was "forged by a writer" and to go on in a new session (`sessiond fork`), for a rekey every other
    device took; now told what happened and to import a new share code, which catches it up."""
    import pytest

    from sessiond.sync.errors import ImportError_

    a, b = await devices.open()
    await a.start()
    sid = await devices.shared("rekeyed very often", write=True)
    for i in range(CLAIMS_KEPT + 2):
        await a.rekey(sid)
        await devices.dba.append_messages(sid, [{"role": "user", "content": f"after rekey {i}"}])
    assert (await a.sync_now(sid, wait=True, timeout=30))["complete"]
    before = [m["content"] for m in await devices.dbb.list_messages(sid, limit=100)]
    with pytest.raises(ImportError_) as err:
        await b.pull(sid)
    said = str(err.value)
    assert err.value.kind == "rekey_unconfirmed", said
    assert f"more than {CLAIMS_KEPT} times" in said and "new share code" in said, said
    assert "forged" not in said and "fork" not in said, said
    assert [m["content"] for m in await devices.dbb.list_messages(sid, limit=100)] == before
    await b.import_code((await a.share(sid, write=True, passphrase=None, expires_in=None))["code"], None)
    await b.pull(sid)
    want = [m["content"] for m in await devices.dba.list_messages(sid, limit=100)]
    assert [m["content"] for m in await devices.dbb.list_messages(sid, limit=100)] == want
