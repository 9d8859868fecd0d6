"""A frozen log whose manifest the store lost was put back (frozenrepair.py) by whichever writer of the session
first found it lost, built from that writer's database as it was: a kept writer that had pulled the dropped
writer's log only in part (it pulled it before the dropped writer's last pushes, and the frozen log was lost
before it took it) named a manifest holding less than the rekey froze, and once named it is in the store: no
device put back more, and every later import lacked the rest (messages lost for every new device). A writer now
puts a frozen log back only as far as it took that log whole from its manifest (noted in its database), and
never past it."""

from __future__ import annotations

import contextlib

from sessiond.sync.errors import ImportError_


async def _texts(db, sid: str) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in await db.list_messages(sid, limit=1000)]


async def test_a_writer_that_holds_part_of_a_lost_frozen_log_does_not_put_back_less(devices):
    a, b = await devices.open()
    await a.start()
    sid = await devices.shared("frozen partial", write=True)  # B: a writer
    dbc, c = await devices._device("c", None, {})
    await c.import_code((await a.share(sid, write=True, passphrase=None, expires_in=None))["code"], None)
    await devices.dbb.append_messages(sid, [{"role": "assistant", "content": "B one"}])
    await b.push(sid)
    await c.follower.pull(sid)  # C holds "B one" only
    assert ("assistant", "B one") in await _texts(dbc, sid)
    await devices.dbb.append_messages(sid, [{"role": "assistant", "content": "B two"}])
    await b.push(sid)
    assert (await a.sync_now(sid, wait=True, timeout=20))["complete"]
    assert ("assistant", "B two") in await _texts(devices.dba, sid)
    await a.rekey(sid, drop=[devices.dbb.device_id])  # B's log frozen with both; C kept
    # B, not knowing yet, pushes on to its head (the frozen manifest is no longer its head's)
    await devices.dbb.append_messages(sid, [{"role": "assistant", "content": "B three"}])
    with contextlib.suppress(ImportError_):
        await b.push(sid)
    assert (await a.sync_now(sid, wait=True, timeout=20))["complete"]  # (A takes the frozen log from the slot)
    remote = await devices.dba.remote(sid)
    store, key = a.ctx.store, a.ctx.keys.session_key(sid)
    _rev, _members, _notice, frozen = await a.members.read_slot(store, sid, key, bytes(remote["announce_pk"]))
    lost = bytes(frozen[0]["h"])
    await store.free([lost])  # (deleted by hand)

    # C takes the notice and reads the new slot: the frozen log is lost, and C holds "B one" only
    for _ in range(3):
        with contextlib.suppress(ImportError_):  # (fixed: "frozen_lost", as C does not put back what it lacks)
            await c.follower.pull(sid)
    assert ("assistant", "B two") not in await _texts(dbc, sid)
    # A, asked (what the import's error says to run on a writer), puts the log back if it is still lost
    await a.sync_now(sid, wait=True, timeout=20)
    code = (await a.share(sid, write=False, passphrase=None, expires_in=None))["code"]
    dbd, d = await devices._device("d", None, {})
    await d.import_code(code, None)
    held = await _texts(devices.dba, sid)
    assert ("assistant", "B two") in held
    assert await _texts(dbd, sid) == held  # main: "B two" missing (C's put back holds "B one" only)
