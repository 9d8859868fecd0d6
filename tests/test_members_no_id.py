"""A writer of a session's members slot whose device id is not known (a member whose log was never read:
its `peers` row has no device id) is listed with no id (docs/FORMATS.md §6): read back, its id is None, not
the text "None", and a slot written again from such a list does not carry "None" on into the store. The
places that name a member (devices, rekey, proofs) name it by the start of its head key instead."""

from __future__ import annotations

import os

from nacl.signing import SigningKey

from sessiond.sync import dagcbor
from sessiond.sync.crypto import members_key, open_unpadded

# a writer whose log neither device has read: its head key is all either knows of it
GHOST = b"\xed" + bytes(SigningKey(os.urandom(32)).verify_key)
GHOST_NAME = GHOST.hex()[:16]


async def slot_object(syncer, sid: str) -> dict:
    """The members object the store's slot of `sid` names, opened as any reader opens it."""
    ctx = syncer.members.ctx
    remote = await ctx.db.remote(sid)
    store = await ctx.store_for(sid)
    entry = await store.get_head(b"\xed" + bytes(remote["announce_pk"]))
    h, salt = entry.data[1:33], entry.data[33:]
    return dagcbor.decode(open_unpadded(await store.get(h), members_key(ctx.keys.session_key(sid), salt)))


async def shared_with_a_ghost(devices) -> tuple[str, object, object]:
    """A's session, with a writer A knows by its head key only (its `peers` row has no device id), shared
    read-write with B: (session, A, B)."""
    a, b = await devices.open()
    await a.start()  # (a share waits for its push; B is not started: nothing of it runs but what a test calls)
    sid = (await devices.dba.create_session({"name": "ghost"}))["id"]
    await devices.dba.append_messages(sid, [{"role": "user", "content": "a1"}])
    await devices.dba.apply_remote(
        sid, {}, peers=[{"head_pk": GHOST, "device_id": None, "rev": 0, "applied_seq": 0, "last_error": None}]
    )
    code = (await a.share(sid, write=True, passphrase=None, expires_in=None))["code"]
    await b.import_code(code, None)
    return sid, a, b


async def test_a_member_with_no_known_device_id_reads_back_as_none(devices):
    sid, a, b = await shared_with_a_ghost(devices)
    ctx = b.members.ctx
    remote = await ctx.db.remote(sid)
    _, members, _ = await b.members.read_members(
        await ctx.store_for(sid), sid, ctx.keys.session_key(sid), bytes(remote["announce_pk"])
    )
    ghost = [m for m in members if m["head_pk"] == GHOST]
    assert ghost == [{"head_pk": GHOST, "device_id": None}]
    # B follows it with no id, as A did, and lists it by its head key
    assert [p["device_id"] for p in await devices.dbb.peers(sid) if bytes(p["head_pk"]) == GHOST] == [None]
    listed = {d["device"]: d for d in (await b.devices(sid))["devices"]}
    assert listed[GHOST_NAME]["writer"] and "None" not in listed


async def test_a_slot_written_again_from_a_member_with_no_id_does_not_carry_none(devices):
    sid, a, b = await shared_with_a_ghost(devices)
    # B's import wrote the slot again (it added itself) from the list it read, the ghost in it
    obj = await slot_object(b, sid)
    entries = {bytes(e["k"]): e for e in obj["m"]}
    assert devices.dbb.device_id in {e["d"] for e in entries.values()}  # B's write, not A's
    assert entries[GHOST]["d"] is None
    # and so again for a write of A's from what it reads now (a restore writes the whole slot again)
    await a.members.ensure_member(sid, rewrite=(await devices.dba.remote(sid))["members_rev"])
    assert {bytes(e["k"]): e["d"] for e in (await slot_object(a, sid))["m"]}[GHOST] is None


async def test_a_rekey_names_a_member_of_no_known_id_by_its_head_key_and_drops_it_by_that_name(devices):
    sid, a, b = await shared_with_a_ghost(devices)
    me_b = devices.dbb.device_id
    res = await a.rekey(sid)  # keeping every writer: the ghost too
    assert sorted(res["kept"]) == sorted([GHOST_NAME, me_b]) and res["dropped"] == []
    # B checks the notice against every member of the old slot, the ghost too (it has no head: no claims)
    await b.pull(sid)
    assert b.keys.session_key(sid) == a.keys.session_key(sid)
    assert {bytes(e["k"]): e["d"] for e in (await slot_object(a, sid))["m"]}[GHOST] is None
    # `sessiond devices` lists it by that name, and `unshare --device` takes it
    assert GHOST_NAME in {d["device"] for d in (await a.devices(sid))["devices"]}
    res = await a.unshare(sid, GHOST_NAME)
    assert res["dropped"] == [GHOST_NAME] and res["kept"] == [me_b], res
    await b.pull(sid)
    assert GHOST not in {bytes(e["k"]) for e in (await slot_object(b, sid))["m"]}
