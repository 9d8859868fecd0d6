"""A device away through more than CLAIMS_KEPT rekeys by one device reads that device's older manifests for the claim
of the first notice (sync/rekeyproof.py `_claimed_before`). An older manifest holds every claim its author made, the
ones it took back too: a rekey that gave up, or lost the slot to another device's notice, withdraws its claim
(sync/rekey.py `_withdraw`), and one that started over claims its new notice in place of the first. A notice so
taken back may still be in a store (one store of a mirror took it as the others refused it as stale; a store host
keeps the revision of the slot that held it and serves it again). The walk took the first claim matching: such a
notice was taken, its key one no other device holds, a generation no device writes (this device's writes lost to
the others, theirs to it). A claim found down the chain counts only if it left the log by its cap (the oldest, the
manifest after it full) and no later manifest claims another notice of that slot."""

from __future__ import annotations

import os

import pytest
from nacl.public import SealedBox
from nacl.signing import VerifyKey

from devices import count_gets
from sessiond.stores.registry import RegistryEntry
from sessiond.sync import dagcbor
from sessiond.sync.crypto import members_key
from sessiond.sync.errors import ImportError_
from sessiond.sync.manifest import CLAIMS_KEPT
from sessiond.sync.members import announce_key
from sessiond.sync.membersobject import SALT_LEN, members_object, seal_small
from sessiond.sync.rekeyproof import notice_hash


async def _claims_pushed(devices, sid: str, claims: list[dict]) -> None:
    """A's manifest pushed with `claims`, as its rekeyer pushes it (sync/rekey.py `_claim`, `_withdraw`)."""
    await devices.dba.save_sync_state(sid, rekey_claims=dagcbor.encode(claims) if claims else None)
    await devices.a.pusher.push(sid, force=True)


async def _abandoned_notice(devices, sid: str) -> tuple[dict, bytes]:
    """A notice of A's rekey of the current slot, boxed to A and B: (it, the new key it gives)."""
    a, b = devices.a, devices.b
    key, write = os.urandom(32), os.urandom(32)
    new_announce = bytes(announce_key(write).verify_key)
    secret = dagcbor.encode({"a": new_announce, "k": key, "w": write})
    pks = [a.ctx.keys.head_pk(sid), b.ctx.keys.head_pk(sid)]
    boxes = [{"k": pk, "x": SealedBox(VerifyKey(pk[1:]).to_curve25519_public_key()).encrypt(secret)} for pk in pks]
    return {"a": new_announce, "b": boxes, "d": devices.a.ctx.db.device_id, "t": 1}, key


async def _slot_served_with(devices, sid: str, notice: dict) -> None:
    """The current members slot one revision on, its writers as they are, holding `notice`: the revision A's
    abandoned attempt put (signed with the write secret every writer holds), which the store serves."""
    a = devices.a
    store = await a.ctx.store_for(sid)
    old_key, old_write = a.ctx.keys.session_key(sid), a.ctx.keys.write_secret(sid)
    slot_key = announce_key(old_write)
    entry = await store.get_head(b"\xed" + bytes(slot_key.verify_key))
    assert entry is not None
    members = [
        {"head_pk": a.ctx.keys.head_pk(sid), "device_id": a.ctx.db.device_id},
        {"head_pk": devices.b.ctx.keys.head_pk(sid), "device_id": devices.b.ctx.db.device_id},
    ]
    obj = {**members_object(sid, members), "rekey": notice}
    salt = os.urandom(SALT_LEN)
    h = await store.put(seal_small(dagcbor.encode(obj), members_key(old_key, salt)))
    await store.set_head(RegistryEntry.create(slot_key, entry.revision + 1, b"\x1e" + h + salt))


@pytest.mark.parametrize("then", ["withdrawn", "claimed_again"])
async def test_a_claim_its_author_took_back_is_not_found_in_its_older_manifests(devices, then):
    """A claims a notice of the current slot and takes the claim back (`withdrawn`; or claims another notice of the
    slot in its place, a rekey that started over: `claimed_again`), then claims CLAIMS_KEPT rekeys of other slots;
    the store serves B the slot holding the notice taken back. B refuses it, and keeps its key."""
    a, b = await devices.open()
    await a.start()
    sid = await devices.shared("taken back", write=True)
    await b.pull(sid)
    key = b.ctx.keys.session_key(sid)
    old_announce = bytes(announce_key(a.ctx.keys.write_secret(sid)).verify_key)
    notice, abandoned_key = await _abandoned_notice(devices, sid)
    claim = {"a": notice["a"], "h": notice_hash(notice), "o": old_announce}
    await _claims_pushed(devices, sid, [claim])
    if then == "withdrawn":
        await _claims_pushed(devices, sid, [])
    else:
        again, _ = await _abandoned_notice(devices, sid)
        await _claims_pushed(devices, sid, [{"a": again["a"], "h": notice_hash(again), "o": old_announce}])
    others = [{"a": os.urandom(32), "h": os.urandom(32), "o": os.urandom(32)} for _ in range(CLAIMS_KEPT)]
    for i in range(1, CLAIMS_KEPT + 1):  # its later rekeys' claims, one push each
        await _claims_pushed(devices, sid, others[:i])
    await _slot_served_with(devices, sid, notice)

    with pytest.raises(ImportError_) as err:
        await b.pull(sid)
    assert err.value.kind == "rekey_unconfirmed", err.value
    assert b.ctx.keys.session_key(sid) == key != abandoned_key


async def test_a_claim_that_left_its_authors_log_by_the_cap_is_found_in_its_older_manifests(devices):
    """The same notice, its claim never taken back: pushed out of A's log by CLAIMS_KEPT later ones. B takes it."""
    a, b = await devices.open()
    await a.start()
    sid = await devices.shared("aged out", write=True)
    await b.pull(sid)
    old_announce = bytes(announce_key(a.ctx.keys.write_secret(sid)).verify_key)
    notice, new_key = await _abandoned_notice(devices, sid)
    claims = [{"a": notice["a"], "h": notice_hash(notice), "o": old_announce}]
    await _claims_pushed(devices, sid, claims)
    for _ in range(CLAIMS_KEPT):
        claims = [*claims, {"a": os.urandom(32), "h": os.urandom(32), "o": os.urandom(32)}][-CLAIMS_KEPT:]
        await _claims_pushed(devices, sid, claims)
    await _slot_served_with(devices, sid, notice)
    try:
        await b.pull(sid)
    except ImportError_ as exc:  # (the new slot is never written here: what B says of that is not this test's)
        assert exc.kind != "rekey_unconfirmed", exc
    assert b.ctx.keys.session_key(sid) == new_key


async def test_a_notice_refused_after_the_walk_is_not_walked_again_while_its_authors_head_stands(devices):
    """The walk reads up to CLAIMS_WALK manifests, while the store holds them (a store the author's gc never runs
    on, or one keeping what it was told to delete, holds them all): a notice it refused was walked again at every
    pull, up to a thousand reads a pull. The chain from one head does not change: the walk's result is kept for
    that head, and a pull while it stands reads the head's manifest only."""
    a, b = await devices.open()
    await a.start()
    sid = await devices.shared("walked", write=True)
    await b.pull(sid)
    claims: list[dict] = []
    for _ in range(CLAIMS_KEPT + 24):  # A's rekeys of other slots, one push each: none of them claims the notice
        claims = [*claims, {"a": os.urandom(32), "h": os.urandom(32), "o": os.urandom(32)}][-CLAIMS_KEPT:]
        await _claims_pushed(devices, sid, claims)
    notice, _ = await _abandoned_notice(devices, sid)  # never claimed
    await _slot_served_with(devices, sid, notice)
    gets = count_gets(await b.ctx.store_for(sid))
    with pytest.raises(ImportError_) as err:
        await b.pull(sid)
    assert err.value.kind == "rekey_unconfirmed", err.value
    walked = len(gets)
    assert walked > CLAIMS_KEPT + 24, walked  # (the walk, down to A's first manifest)
    gets.clear()
    with pytest.raises(ImportError_) as err:
        await b.pull(sid)
    assert err.value.kind == "rekey_unconfirmed", err.value
    assert len(gets) < CLAIMS_KEPT, (len(gets), walked)
