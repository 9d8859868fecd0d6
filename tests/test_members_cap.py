"""The members object's cap (docs/FORMATS.md §6: MEMBERS_MAX_BYTES sealed). A device refuses to write a
list past it, saying what and what to do, and leaves the slot as it was; a reader refuses a members object
past it from the store without reading it into memory (a hostile writer or a lying store can name an
object of any size)."""

from __future__ import annotations

import os
import tracemalloc

import pytest

from sessiond.storage.errors import NotFound
from sessiond.stores import MAX_OBJECT_SIZE, CorruptObject, FileStore
from sessiond.stores.cid import digest
from sessiond.stores.registry import RegistryEntry
from sessiond.sync import dagcbor
from sessiond.sync.crypto import members_key
from sessiond.sync.errors import ImportError_
from sessiond.sync.members import announce_key
from sessiond.sync.membersobject import MEMBERS_MAX_BYTES, SALT_LEN, seal_small
from test_members_no_id import slot_object


def _writers(n: int) -> list[dict]:
    return [{"head_pk": b"\xed" + i.to_bytes(32, "big"), "device_id": f"device-{i:06d}"} for i in range(n)]


async def test_a_members_list_past_the_cap_is_refused_locally_and_the_slot_is_left_as_it_was(devices):
    sid, _code = await devices.started_share("crowded", write=True)
    a = devices.a
    before = await slot_object(a, sid)
    rev = (await devices.dba.remote(sid))["members_rev"]
    too_many = _writers(MEMBERS_MAX_BYTES // 40)  # each entry takes more than 40 bytes sealed
    with pytest.raises(ImportError_) as caught:
        await a.members.ensure_member(sid, extra=too_many)
    err = caught.value
    assert err.kind == "members_full"
    said = str(err)
    assert f"{MEMBERS_MAX_BYTES >> 10} KiB" in said and sid in said  # what: the cap, the session
    assert "sessiond rekey" in (err.fix or "") and "--drop" in (err.fix or "")  # what to do
    assert (await devices.dba.remote(sid))["members_rev"] == rev
    assert await slot_object(a, sid) == before
    # a list under the cap is still written
    assert await a.members.ensure_member(sid, extra=_writers(10)) == rev + 1


async def test_a_members_object_past_the_cap_in_the_store_is_refused_unread(devices):
    sid, code = await devices.started_share("stuffed", write=True)
    a, b = devices.a, devices.b
    ctx = a.members.ctx
    # a hostile writer (it holds the write secret) names a members object of 8 MiB from the slot
    obj = {**await slot_object(a, sid), "zz": os.urandom(8 << 20)}
    store = await ctx.store_for(sid)
    salt = os.urandom(SALT_LEN)
    sealed = seal_small(dagcbor.encode(obj), members_key(ctx.keys.session_key(sid), salt))
    h = digest(sealed)  # (the store's put refuses an object over 1 MiB: the file is written as it stores one)
    path = store._obj_path(h)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:  # as a writer with access to the folder puts it
        f.write(sealed)
    del sealed, obj
    ak = announce_key(ctx.keys.write_secret(sid))
    rev = (await devices.dba.remote(sid))["members_rev"]
    await store.set_head(RegistryEntry.create(ak, rev + 1, b"\x1e" + h + salt))

    tracemalloc.start()
    try:
        with pytest.raises(ImportError_) as caught:
            await a.members.read_members(store, sid, ctx.keys.session_key(sid), bytes(ak.verify_key))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.kind == "damaged"
    assert f"{MEMBERS_MAX_BYTES >> 10} KiB" in str(caught.value) and "members" in str(caught.value)
    assert peak < 1 << 20, peak  # not read: 8 MiB never came into memory
    # another device importing the code is refused the same way, nothing of the session taken
    with pytest.raises(ImportError_) as caught:
        await b.import_code(code, None)
    assert f"{MEMBERS_MAX_BYTES >> 10} KiB" in str(caught.value)
    with pytest.raises(NotFound):
        await devices.dbb.get_session(sid)


async def test_a_folder_store_refuses_unread_an_object_file_past_the_1_mib_any_object_may_be(tmp_path):
    store = FileStore(str(tmp_path / "store"))
    await store.put(b"made")  # (the folder laid out)
    data = os.urandom(MAX_OBJECT_SIZE + 1)
    h = digest(data)
    path = store._obj_path(h)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:  # as anyone who can write to the folder can put it
        f.write(data)
    with pytest.raises(CorruptObject, match=r"1,048,577 bytes, more than the 1 MiB an object may be"):
        await store.get(h)
    await store.close()
