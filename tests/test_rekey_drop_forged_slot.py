"""`rekey --drop C` answered "dropped already" from old members slots a writer rewrote, while C read on.

A's rekey dropped C; B's code let C back in (a writer again); A's next rekey, dropping no one, boxed C the key. C, a
writer of both generations, holds both slots' write secrets: it writes the old slot one revision on (the notice as it
was, its hash unchanged, the members list without C) and the current slot one revision on without C. A's `rekey
--drop C` read the old slot's list, found C in no box of the rekey that made the current key (C "no writer of the slot
it read"), and answered dropped already, rotating nothing: C read every later write. What a rekey's notice boxed is
the notice's to say, and a writer's head key known here boxed there is one that reads: the key is rotated."""

from __future__ import annotations

import asyncio
import os

from conftest import wait_for
from killing import session_key
from sessiond.stores import FileStore
from sessiond.stores.registry import RegistryEntry
from sessiond.sync import dagcbor
from sessiond.sync.crypto import members_key, open_unpadded
from sessiond.sync.members import announce_key
from sessiond.sync.membersobject import SALT_LEN, seal_small
from test_rekey_drop_since import _c_writer, _lists, c_reads_nothing_after


def _secrets(d, sid: str) -> tuple[bytes, bytes]:
    with open(os.path.join(d.home, "keys", "sessions", f"{sid}.write"), "rb") as f:
        return session_key(d, sid), f.read()


async def _without(store_dir: str, key: bytes, write: bytes, device: str) -> None:
    """The slot of (`key`, `write`) written one revision on, as any of its writers can: all as it was (its notice
    too), but `device` listed no more."""
    store = FileStore(store_dir)
    slot_key = announce_key(write)
    entry = await store.get_head(b"\xed" + bytes(slot_key.verify_key))
    assert entry is not None
    h, salt = entry.data[1:33], entry.data[33:]
    obj = dagcbor.decode(open_unpadded(await store.get(h), members_key(key, salt)))
    assert any(m["d"] == device for m in obj["m"]), obj["m"]
    obj["m"] = [m for m in obj["m"] if m["d"] != device]
    salt = os.urandom(SALT_LEN)
    h = await store.put(seal_small(dagcbor.encode(obj), members_key(key, salt)))
    await store.set_head(RegistryEntry.create(slot_key, entry.revision + 1, b"\x1e" + h + salt))


def test_a_drop_over_old_slots_a_writer_rewrote_without_it_rotates_the_key(make_daemon, store_dir):
    a, b, c, sid, b_id, c_id = _c_writer(make_daemon, f"file://{store_dir}", "forged old slot")
    a.client().rekey(sid, drop=[c_id])
    wait_for(
        lambda: b.client().sync(sid, wait=True, timeout=10) and session_key(b, sid) == session_key(a, sid),
        timeout=30,
        what="B takes A's rekey",
    )
    c.client().import_code(b.client().share(sid, write=True)["code"])  # B lets C back in, a writer
    c.client().append(sid, "user", "c back")
    assert c.client().sync(sid, wait=True, timeout=30)["complete"]
    wait_for(lambda: _lists(a, sid, c_id), timeout=30, what="A lists C as a writer again")
    gen1 = _secrets(a, sid)
    res = a.client().rekey(sid)  # C kept: boxed the new key
    assert c_id in res["kept"], res
    key = session_key(a, sid)
    wait_for(
        lambda: c.client().sync(sid, wait=True, timeout=10) and session_key(c, sid) == key,
        timeout=30,
        what="C takes A's second rekey",
    )
    # C (a writer of both generations) writes both slots without itself
    asyncio.run(_without(store_dir, *gen1, c_id))
    asyncio.run(_without(store_dir, *_secrets(a, sid), c_id))
    wait_for(lambda: not _lists(a, sid, c_id), timeout=30, what="A reads the current slot without C")

    res = a.client().rekey(sid, drop=[c_id])
    # main: answered dropped already, the key not rotated: C read on
    assert session_key(a, sid) != key, res
    c_reads_nothing_after(a, b, c, sid)
