"""Two writers put back the same lost frozen manifest (sync/frozenrepair.py): the slot names the first one's; the
other's, built and put as well, is named by nothing, and its gc frees it (main: never noted, it stayed in the store
for good). Neither gc frees the one the slot names. In process over a folder store: A rekeys B out; A and C, both
holding B's log whole, put it back, C's read of the slot from before A's write (as when both pulls read it first)."""

from __future__ import annotations

from sessiond.sync.frozenrepair import put_back
from test_frozen_lost import _texts


async def frozen_with_two_writers(devices, name: str):
    """A's session `name` shared with B and C (both writers); B writes, A rekeys B out, and A and C each take B's
    frozen log whole (one they may put back): (A, C, C's database, the session, the frozen logs the slot names,
    its announce key)."""
    a, b = await devices.open()
    await a.start()
    sid = await devices.shared(name, write=True)
    dbc, c = await devices._device("c", None, {})
    code = (await a.share(sid, write=True, passphrase=None, expires_in=None))["code"]
    await c.import_code(code, None)
    for text in ("B one", "B two"):
        await devices.dbb.append_messages(sid, [{"role": "assistant", "content": text}])
    await b.push(sid)
    await c.push(sid)  # (C listed in the members slot: a writer the rekey keeps)
    for dev, db in ((a, devices.dba), (c, dbc)):
        assert (await dev.sync_now(sid, wait=True, timeout=20))["complete"]
        assert ("assistant", "B two") in await _texts(db, sid)
    await a.rekey(sid, drop=[devices.dbb.device_id])  # B's log frozen, named in the new members slot
    for dev in (a, c):  # (C takes the notice) each takes the frozen log, whole: one it may put back
        assert (await dev.sync_now(sid, wait=True, timeout=20))["complete"]
    announce = bytes((await devices.dba.remote(sid))["announce_pk"])
    assert bytes((await dbc.remote(sid))["announce_pk"]) == announce
    frozen = (await a.members.read_slot(a.ctx.store, sid, a.ctx.keys.session_key(sid), announce))[3]
    assert [f["d"] for f in frozen] == [devices.dbb.device_id]
    return a, c, dbc, sid, frozen, announce


async def test_the_manifest_of_a_writer_that_lost_the_race_to_put_a_frozen_log_back_is_freed_by_gc(devices):
    a, c, dbc, sid, frozen, announce = await frozen_with_two_writers(devices, "frozen lost twice")
    store, key = a.ctx.store, a.ctx.keys.session_key(sid)
    lost = bytes(frozen[0]["h"])
    await store.free([lost])  # (deleted by hand)

    mine = (await put_back(a.ctx, a.members, sid, store, frozen))[lost]
    theirs = (await put_back(c.ctx, c.members, sid, c.ctx.store, frozen))[lost]  # (C read the slot before A wrote)
    named = (await a.members.read_slot(store, sid, key, announce))[3]
    assert [bytes(f["h"]) for f in named] == [bytes(mine["h"])]
    assert bytes(theirs["h"]) != bytes(mine["h"]) and await store.has(bytes(theirs["h"]))

    for dev in (a, c):
        await dev.gc(grace=0, dry_run=False)
    assert not await store.has(bytes(theirs["h"]))  # main: kept for good, noted nowhere
    assert await store.has(bytes(mine["h"]))  # (the slot names it)
    dbn, n = await devices._device("n", None, {})
    await n.import_code((await a.share(sid, write=False, passphrase=None, expires_in=None))["code"], None)
    assert ("assistant", "B one") in await _texts(dbn, sid)
