"""A pull's writes of the members slot racing a rekey's switch on the same device: two devices in one process
(tests/devices.py), the order of their steps held by pause points (storage/testhooks.py)."""

from __future__ import annotations

import asyncio
import os

from sessiond.stores.registry import RegistryEntry
from sessiond.sync import dagcbor
from sessiond.sync.crypto import members_key
from sessiond.sync.members import announce_key
from sessiond.sync.membersobject import SALT_LEN, members_object, seal_small
from test_members_no_id import slot_object
from waiting import eventually


async def _slot_without(devices, sid: str) -> None:
    """B writes the members slot one revision on listing B alone (two writes of one revision to the stores of a
    mirror apart leave a slot so, test_sync_races): A, which announced itself in it, writes itself back."""
    b, store = devices.b, await devices.b.ctx.store_for(sid)
    keys, remote = b.ctx.keys, await devices.dbb.remote(sid)
    ak = announce_key(keys.write_secret(sid))
    entry = await store.get_head(b"\xed" + bytes(remote["announce_pk"]))
    me = {"head_pk": keys.head_pk(sid), "device_id": devices.dbb.device_id}
    salt = os.urandom(SALT_LEN)
    sealed = seal_small(dagcbor.encode(members_object(sid, [me])), members_key(keys.session_key(sid), salt))
    await store.set_head(RegistryEntry.create(ak, entry.revision + 1, b"\x1e" + await store.put(sealed) + salt))


async def _b_a_writer(devices) -> str:
    """A (started) shares a session read-write with B, which writes and pushes; A has pulled B: its id."""
    await devices.open()
    await devices.a.start()
    sid = await devices.shared("switching", write=True)
    await devices.dbb.append_messages(sid, [{"role": "assistant", "content": "b1"}])
    await devices.b.push(sid)
    await devices.a.pull(sid)
    return sid


async def _only_a_listed(devices, sid: str) -> None:
    """The new members slot of `sid` (A's rekey dropped B) lists A alone."""
    listed = [m["d"] for m in (await slot_object(devices.a, sid))["m"]]
    assert listed == [devices.dba.device_id]


def _wanted(syncer, sid: str) -> bool:
    """Whether a task waits for `sid`'s rekey lock while another holds it (sync/bounded.py KeyedLocks)."""
    entry = syncer.ctx.rekey_locks._locks.get(sid)
    return entry is not None and entry[0].locked() and entry[1][0] >= 2


async def test_a_pull_writing_the_slot_back_while_a_rekey_switches_lists_no_dropped_writer(devices, tmp_path):
    """A's pull read a slot lacking A and was about to write it back (followfrozen.py) while A's rekey
    dropping B switched: the keys rotated, B's peer row not dropped yet. The write-back
    wrote the new slot with every writer A knew, B among them, and the rekey's own write of it keeps what a slot
    lists: B, dropped, was a member of the new generation, its head followed by every device. A pull writes the
    slot back only under the session's rekey lock, and only on the generation it read."""
    sid = await _b_a_writer(devices)
    await _slot_without(devices, sid)
    back, rotated = str(tmp_path / "pull.write_back"), str(tmp_path / "rekey.rotated")
    os.environ["SESSIOND_TEST_PAUSE"] = f"pull.write_back:{back},rekey.rotated:{rotated}"
    try:
        pulled = asyncio.ensure_future(devices.a.pull(sid))
        await eventually(lambda: os.path.exists(back), timeout=20, what="A's pull, about to write the slot back")
        rekeyed = asyncio.ensure_future(devices.a.rekey(sid, drop=[devices.dbb.device_id]))
        await eventually(lambda: os.path.exists(rotated), timeout=20, what="A's rekey, switching")
        os.remove(back)
        # written back (or waiting for the rekey: its lock held by the rekey, wanted by the pull)
        await eventually(lambda: pulled.done() or _wanted(devices.a, sid), timeout=20, what="the write-back")
    finally:
        del os.environ["SESSIOND_TEST_PAUSE"]
        for flag in (back, rotated):
            if os.path.exists(flag):
                os.remove(flag)
    assert (await rekeyed)["dropped"] == [devices.dbb.device_id]
    await pulled
    await _only_a_listed(devices, sid)


async def test_a_push_while_a_rekey_switches_lists_no_dropped_writer(devices, tmp_path):
    """A's rekey dropping B named its new slot (not announced in it yet) before it dropped B's peer row; a push of
    A in between, finding the session not announced, wrote the new slot with every writer A knew, B among them,
    which the rekey's own write of it kept: B, dropped, a member of the new generation. The switch drops the old
    peers before it names the new slot."""
    sid = await _b_a_writer(devices)
    switching = str(tmp_path / "rekey.switching")
    os.environ["SESSIOND_TEST_PAUSE"] = f"rekey.switching:{switching}"
    try:
        rekeyed = asyncio.ensure_future(devices.a.rekey(sid, drop=[devices.dbb.device_id]))
        await eventually(lambda: os.path.exists(switching), timeout=20, what="A's rekey, switching")
        await devices.dba.append_messages(sid, [{"role": "user", "content": "a2"}])
        await devices.a.push(sid)
    finally:
        del os.environ["SESSIOND_TEST_PAUSE"]
        if os.path.exists(switching):
            os.remove(switching)
    assert (await rekeyed)["dropped"] == [devices.dbb.device_id]
    await _only_a_listed(devices, sid)
