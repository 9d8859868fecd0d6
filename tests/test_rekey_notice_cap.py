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

from sessiond.sync.errors import ImportError_
from sessiond.sync.membersobject import MEMBERS_MAX_BYTES
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
