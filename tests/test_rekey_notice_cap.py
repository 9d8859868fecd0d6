"""A rekey's notice is the members object of the old slot with the rekey in it: a box (the new keys sealed to
its head key, ~150 bytes sealed) for each writer kept. Its cap is the members object's (MEMBERS_MAX_BYTES), and
a list of ~1,500 writers, a third of that cap, made a notice past it. It was refused (members_full) only once the
rekey was recorded here and claimed in this device's pushed manifest: every later rekey (and the follower, at
each round) resumed that one and was refused again, for good, unshare and `rekey --drop` alike, the ways the
refusal named. The notice is measured before anything is written now: refused with nothing recorded, saying to
drop more writers (a box fewer each), and a rekey that drops enough goes through."""

from __future__ import annotations

import asyncio
import os

import pytest
from nacl.signing import SigningKey

from sessiond.stores.registry import RegistryEntry
from sessiond.sync import dagcbor
from sessiond.sync.crypto import manifest_key, seal
from sessiond.sync.errors import ImportError_
from sessiond.sync.heads import head_data
from sessiond.sync.manifest import encode_manifest
from sessiond.sync.membersobject import MEMBERS_MAX_BYTES, members_object
from test_members_no_id import slot_object
from waiting import eventually

WRITERS = 1500


def _writers(n: int) -> list[dict]:
    return [
        {"head_pk": b"\xed" + bytes(SigningKey.generate().verify_key), "device_id": f"device-{i:06d}"} for i in range(n)
    ]


async def test_a_rekey_whose_notice_would_pass_the_cap_is_refused_before_anything_is_written(devices):
    sid, _code = await devices.started_share("crowded", write=True)
    a = devices.a
    writers = _writers(WRITERS)
    await a.members.ensure_member(sid, extra=writers)  # (the list itself, ~90 KiB, is under the cap)
    before = await slot_object(a, sid)
    claims = (await devices.dba.sync_state(sid))["rekey_claims"]
    with pytest.raises(ImportError_) as caught:
        await a.rekey(sid, drop=["device-000000"])
    err = caught.value
    assert err.kind == "members_full", err
    assert f"{MEMBERS_MAX_BYTES >> 10} KiB" in str(err) and "--drop" in (err.fix or ""), (str(err), err.fix)
    assert a.ctx.keys.rekey_pending(sid) is None  # nothing recorded to resume
    assert (await devices.dba.sync_state(sid))["rekey_claims"] == claims  # nor claimed
    assert await slot_object(a, sid) == before
    # dropping enough writers (fewer boxes) makes a notice under the cap: the rekey goes through
    res = await a.rekey(sid, drop=[w["device_id"] for w in writers[: WRITERS - 200]])
    assert len(res["kept"]) == 200


async def test_a_recorded_rekey_whose_notice_is_past_the_cap_is_given_up_not_resumed_for_good(devices, tmp_path):
    """A rekey recorded here (its push of the claim failed: resumed later) whose notice is past the cap when it is
    resumed, as writers joined meanwhile (or recorded so by a sessiond that measured the notice only at its
    publication): given up, its claim withdrawn, refused once; it was resumed, and refused, at every rekey."""
    sid, _code = await devices.started_share("crowded", write=True)
    a = devices.a
    writers = _writers(4700)
    await a.members.ensure_member(sid, extra=writers[:100])
    flag = str(tmp_path / "push.begin")
    os.environ["SESSIOND_TEST_PAUSE"] = f"push.begin:{flag}"
    try:
        rekeying = asyncio.ensure_future(a.rekey(sid, drop=["device-000000"]))
        await eventually(lambda: os.path.exists(flag), timeout=20, what="the claim's push")
    finally:
        del os.environ["SESSIOND_TEST_PAUSE"]
    away = devices.store_path + ".away"
    os.rename(devices.store_path, away)  # the store gone while the claim is pushed: the rekey fails, recorded
    os.remove(flag)
    with pytest.raises(Exception):  # noqa: B017 (the store's failure, whatever its kind)
        await rekeying
    os.rename(away, devices.store_path)
    assert a.ctx.keys.rekey_pending(sid) is not None
    await a.members.ensure_member(sid, extra=writers[100:])  # writers joined: the list under the cap, the notice not
    with pytest.raises(ImportError_) as caught:
        await a.rekey(sid, drop=["device-000001"])  # resumes the recorded one first
    assert caught.value.kind == "members_full", caught.value
    assert a.ctx.keys.rekey_pending(sid) is None  # given up: the next rekey starts afresh
    with pytest.raises(ImportError_) as caught:
        await a.rekey(sid, drop=["device-000001"])
    assert caught.value.kind == "members_full" and a.ctx.keys.rekey_pending(sid) is None


async def _writers_with_logs(a, sid: str, n: int) -> list[dict]:
    """`n` writers, each with a head in the store naming a manifest (rev 1, nothing in it yet) under the session
    key, as a writer's first push makes: a rekey dropping one freezes its log (a frozen log in the new slot)."""
    key, store = a.ctx.keys.session_key(sid), await a.ctx.store_for(sid)
    out = []
    for i in range(n):
        sk = SigningKey.generate()
        pk, device = b"\xed" + bytes(sk.verify_key), f"wrote-{i:06d}"
        plain = encode_manifest(sid, device, 1, pk, 0, 0, [], None)
        ct, _ = seal(plain, manifest_key(key, pk, 1), pad=False)
        await store.set_head(RegistryEntry.create(sk, 1, head_data(await store.put(ct))))
        out.append({"head_pk": pk, "device_id": device})
    return out


def _frozen(i: int) -> dict:
    """A frozen log of an earlier rekey's dropped writer (FORMATS.md §6), carried on by every later slot."""
    return {"d": f"gone-{i:06d}", "k": b"\xed" + os.urandom(32), "r": 1, "h": os.urandom(32), "x": os.urandom(32)}


async def test_a_rekey_whose_new_slot_would_pass_the_cap_is_refused_before_anything_is_written(devices):
    """A rekey's new members slot carries a frozen log (~130 bytes) of each writer it drops that wrote, in place
    of its entry (~50 bytes), and every log frozen before; its notice carries only the former. With the old slot near
    the cap, a rekey dropping writers that wrote passed the check of its notice, and was refused (members_full)
    only writing the new slot: its notice out, the switch cut short, resumed and refused at every pull for
    good. What the new slot will hold is measured with the notice, before anything is written."""
    sid, _code = await devices.started_share("frozen many times", write=True)
    a = devices.a
    dropped = await _writers_with_logs(a, sid, 40)
    me = {"head_pk": a.ctx.keys.head_pk(sid), "device_id": devices.dba.device_id}

    def size(f: int) -> int:
        return len(dagcbor.encode(members_object(sid, [me, *dropped], [_frozen(i) for i in range(f)])))

    per = size(2) - size(1)  # the slot within ~1,200 bytes of the cap: 40 frozen logs in place of entries pass it
    frozen = [_frozen(i) for i in range((MEMBERS_MAX_BYTES - 1200 - size(0)) // per)]
    await a.members.ensure_member(sid, extra=dropped, frozen=frozen)
    before = await slot_object(a, sid)
    claims = (await devices.dba.sync_state(sid))["rekey_claims"]
    with pytest.raises(ImportError_) as caught:
        await a.rekey(sid, drop=[w["device_id"] for w in dropped])
    assert await slot_object(a, sid) == before  # no notice out
    assert a.ctx.keys.rekey_pending(sid) is None  # nothing recorded to resume
    assert (await devices.dba.sync_state(sid))["rekey_claims"] == claims  # nor claimed
    err = caught.value
    assert err.kind == "members_full", err
    assert f"{MEMBERS_MAX_BYTES >> 10} KiB" in str(err) and "new members list" in str(err), str(err)
    assert "--drop" in (err.fix or "") and "fork" in (err.fix or ""), err.fix
    # dropping fewer of them (the others kept: an entry each, not a frozen log) makes a slot under the cap
    res = await a.rekey(sid, drop=[w["device_id"] for w in dropped[:10]])
    assert len(res["dropped"]) == 10
    assert len((await slot_object(a, sid))["f"]) == len(frozen) + 10
