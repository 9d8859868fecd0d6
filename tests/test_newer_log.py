"""A log or members slot written by a newer sessiond (a format version past this one's) is refused as that:
upgrade this device, not the log "damaged" with advice to push it again or leave a store serving forged heads,
which is what a device said of a log in a format it did not know (as 2026-11-22's pages of version 1 read
today). Each object kind that carries a version (docs/FORMATS.md §4, §6): manifest, page, node, parts, the
members object (a rekey notice and the frozen logs are the members object's: no version of their own)."""

from __future__ import annotations

import os

import pytest

from sessiond.stores.cid import BlobId
from sessiond.stores.registry import RegistryEntry
from sessiond.sync import dagcbor
from sessiond.sync.crypto import manifest_key, members_key, object_key, open_unpadded, seal
from sessiond.sync.engine import _open_manifest, head_data
from sessiond.sync.members import announce_key
from sessiond.sync.membersobject import seal_small
from sessiond.sync.share import ImportError_


async def test_a_manifest_of_a_newer_version_is_refused_as_newer(devices):
    sid, code = await devices.started_share("newer", write=False)
    a, b = devices.a, devices.b
    # A's head as a newer sessiond would write it: its manifest of version 2, sealed and signed with A's keys
    pk = a.keys.head_pk(sid)
    entry = await a.store.get_head(pk)
    key = a.keys.session_key(sid)
    h = entry.data[1:]
    m = dagcbor.decode(_open_manifest(await a.store.get(h), h, key, entry.pk, entry.revision))
    rev = entry.revision + 1
    ct, _ = seal(dagcbor.encode({**m, "v": 2}), manifest_key(key, entry.pk, rev), pad=False)
    await a.store.set_head(RegistryEntry.create(a.keys.head_key(sid), rev, head_data(await a.store.put(ct))))
    with pytest.raises(ImportError_) as refused:
        await b.import_code(code, None)
    said = f"{refused.value} {refused.value.fix}"
    assert refused.value.kind == "newer", said
    assert "newer sessiond" in said and "upgrade sessiond" in said, said
    assert "damaged" not in said and "forged" not in said, said
    assert refused.value.owner == [refused.value.fix]  # the upgrade: its owner's way (the API's details.owner)
    assert await devices.dbb.session_ids() == []


# ---------------------------------------------------------------------------------------------- other objects
async def _rewrite_log(a, sid: str, levels) -> None:
    """A's head moved on to a manifest (sealed and signed with A's real keys) whose levels are `levels(entry,
    key)` of the entry of A's one page and A's session key: what a newer sessiond's push would publish."""
    pk = a.keys.head_pk(sid)
    entry = await a.store.get_head(pk)
    key = a.keys.session_key(sid)
    h = entry.data[1:]
    m = dagcbor.decode(_open_manifest(await a.store.get(h), h, key, entry.pk, entry.revision))
    [[page]] = m["l"]
    rev = entry.revision + 1
    made = {**m, "r": rev, "l": [[await levels(dict(page), key, a.store)]]}
    ct, _ = seal(dagcbor.encode(made), manifest_key(key, entry.pk, rev), pad=False)
    await a.store.set_head(RegistryEntry.create(a.keys.head_key(sid), rev, head_data(await a.store.put(ct))))


async def _sealed_object(store, key: bytes, obj: dict) -> bytes:
    """`obj` sealed as a log's object (docs/FORMATS.md §2) and put in `store`: its encrypted CID."""
    plain = dagcbor.encode(obj)
    blob = BlobId.of(plain)
    ct, ref = seal(plain, object_key(key, blob.hash), plain=blob)
    await store.put(ct)
    return ref.to_bytes()


async def _refused_as_newer(devices, code: str, what: str) -> None:
    with pytest.raises(ImportError_) as refused:
        await devices.b.import_code(code, None)
    said = f"{refused.value} {refused.value.fix}"
    assert refused.value.kind == "newer", said
    assert what in said and "newer sessiond" in said and "upgrade sessiond" in said, said
    assert "damaged" not in said and "forged" not in said and "another store" not in said, said
    assert await devices.dbb.session_ids() == []


@pytest.mark.parametrize("kind", ["node", "parts"])
async def test_a_node_or_parts_object_of_a_newer_version_is_refused_as_newer(devices, kind):
    sid, code = await devices.started_share(f"newer {kind}", write=False)
    a = devices.a

    async def levels(page: dict, key: bytes, store) -> dict:
        if kind == "node":  # a node of version 2 listing A's page
            obj = {"d": a.ctx.db.device_id, "e": [page], "s": sid, "v": 2, "ty": "sessiond/node"}
            return {**page, "c": await _sealed_object(store, key, obj), "k": 1}
        # the page as a page in parts (one part: itself), its parts object of version 2
        obj = {"d": a.ctx.db.device_id, "p": [page["c"]], "s": sid, "v": 2, "ty": "sessiond/parts"}
        return {**page, "c": await _sealed_object(store, key, obj), "k": 2}

    await _rewrite_log(a, sid, levels)
    await _refused_as_newer(devices, code, f"{kind} ")


async def test_a_members_object_of_a_newer_version_is_refused_as_newer(devices):
    sid, code = await devices.started_share("newer members", write=True)
    a = devices.a
    # A's members slot again, its object of version 2 (sealed and signed with the session's real keys)
    key, ak = a.keys.session_key(sid), announce_key(a.keys.write_secret(sid))
    entry = await a.store.get_head(b"\xed" + bytes(ak.verify_key))
    salt = entry.data[33:]
    m = dagcbor.decode(open_unpadded(await a.store.get(entry.data[1:33]), members_key(key, salt)))
    salt = os.urandom(len(salt))
    h = await a.store.put(seal_small(dagcbor.encode({**m, "v": 2}), members_key(key, salt)))
    await a.store.set_head(RegistryEntry.create(ak, entry.revision + 1, b"\x1e" + h + salt))
    await _refused_as_newer(devices, code, "members slot")


# ---------------------------------------------------------------------------------------------- verify
async def test_verify_names_this_devices_own_log_of_a_newer_version_as_newer(devices):
    """`sessiond verify` of this device's own log, its manifest (or an object below it) written by a newer
    sessiond (the home used by one, then by this older one): it said "damaged" and marked the log to be pushed
    again, which would write over what the newer one wrote, where a pull says `newer`: upgrade. Now verify
    names it as newer (`newer`, and the upgrade in `upgrade`), lists nothing as damaged and repairs nothing."""
    sid, _ = await devices.started_share("newer, verified", write=False)
    a = devices.a
    assert (await a.verify(sid))["ok"]
    pk = a.keys.head_pk(sid)
    entry = await a.store.get_head(pk)
    key = a.keys.session_key(sid)
    h = entry.data[1:]
    m = dagcbor.decode(_open_manifest(await a.store.get(h), h, key, entry.pk, entry.revision))
    rev = entry.revision + 1  # as a newer sessiond on this home would push it
    ct, _ = seal(dagcbor.encode({**m, "r": rev, "v": 2}), manifest_key(key, entry.pk, rev), pad=False)
    await a.store.set_head(RegistryEntry.create(a.keys.head_key(sid), rev, head_data(await a.store.put(ct))))
    (s,) = (await a.verify(sid))["sessions"]
    said = " ".join(s["problems"])
    assert not s["ok"] and s.get("newer") and "newer sessiond" in said, s
    assert "upgrade sessiond" in s.get("upgrade", ""), s
    assert s["damaged"] == [] and "repair" not in s and sid not in a.ctx.repair, s
