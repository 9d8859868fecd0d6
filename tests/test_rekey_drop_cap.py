"""`rekey --drop X` for an X that is no writer of the members slot looks for a rekey that dropped X before: this
device's own claims, then the claims in each other writer's manifest and the old slots they name. The slot is any
writer's to write: one filled with made-up members had each one's manifest read, and up to 16 old slots per
member, for one name not found (thousands of store reads). Those reads are capped now (rekeyfreeze.OTHERS_READS),
and the refusal says that it looked no further."""

from __future__ import annotations

import pytest
from nacl.signing import SigningKey

from sessiond.sync import rekeyfreeze
from sessiond.sync.errors import ImportError_


def _writers(n: int) -> list[dict]:
    return [
        {"head_pk": b"\xed" + bytes(SigningKey.generate().verify_key), "device_id": f"device-{i:06d}"} for i in range(n)
    ]


async def test_a_drop_not_found_reads_no_more_than_the_cap_of_other_writers_rekeys(devices, monkeypatch):
    sid, _code = await devices.started_share("crowded", write=True)
    a = devices.a
    await a.members.ensure_member(sid, extra=_writers(300))  # as a hostile writer fills the slot
    read = rekeyfreeze.read_manifest
    asked: list[bytes] = []

    async def counted(store, s, keys, pk, *args, **kw):
        asked.append(pk)
        return await read(store, s, keys, pk, *args, **kw)

    monkeypatch.setattr(rekeyfreeze, "read_manifest", counted)
    with pytest.raises(ImportError_) as caught:
        await a.rekey(sid, drop=["notadevice"])
    err = caught.value
    assert err.kind == "unknown_device", err
    assert len(asked) <= rekeyfreeze.OTHERS_READS, len(asked)
    assert f"the first {rekeyfreeze.OTHERS_READS} reads" in str(err) and "nothing was rekeyed" in str(err), str(err)
    assert f"sessiond rekey {sid}" in str(err), str(err)
    assert a.ctx.keys.rekey_pending(sid) is None
