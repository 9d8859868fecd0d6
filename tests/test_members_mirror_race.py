"""A members slot written on a mirror's store while its device carries another device's revision there.

Device A syncs through a mirror of two folder stores; B, on the second alone, writes the slot's next revision N
there; A, reading it through the mirror, carries B's entry to the first store (sync/slotrestore.py). If C, on the
first store alone, writes its own revision N there between A's read of that store and A's carry, the carry is
refused (the store keeps the revision it holds): two slots of revision N, one listing B, the other C. That refusal
was left to "the next check", and the follower checks only on a new revision: nothing merged them until a `sessiond
sync`, and A followed one of B and C only. The restore reads the stores again after such a refusal."""

from __future__ import annotations

import os

from sessiond.storage.database import Database
from sessiond.stores import FileStore
from sessiond.stores.cid import digest
from sessiond.stores.registry import RegistryEntry
from sessiond.sync import dagcbor
from sessiond.sync.crypto import members_key
from sessiond.sync.engine import Syncer
from sessiond.sync.members import announce_key
from sessiond.sync.membersobject import SALT_LEN, members_object, seal_members
from sessiond.sync.mirror import MirrorStore


async def write_slot(store: FileStore, syncer: Syncer, sid: str, rev: int, writers: list[dict]) -> RegistryEntry:
    """Another device's write of the slot's revision `rev` to `store` alone, listing `writers`."""
    keys = syncer.ctx.keys
    ws, key = keys.write_secret(sid), keys.session_key(sid)
    assert ws is not None and key is not None
    salt = os.urandom(SALT_LEN)
    plain = dagcbor.encode(members_object(sid, writers))
    ct = seal_members(sid, plain, members_key(key, salt), len(writers))
    await store.put(ct)
    entry = RegistryEntry.create(announce_key(ws), rev, b"\x1e" + digest(ct) + salt)
    await store.set_head(entry)
    return entry


async def test_a_slot_written_on_the_store_behind_while_it_is_carried_there_is_merged(tmp_path):
    db = await Database.open(str(tmp_path / "a.sqlite"))
    first, second = FileStore(str(tmp_path / "first")), FileStore(str(tmp_path / "second"))
    mirror = MirrorStore([first, second], db.outbox, timeout=10)
    a = Syncer(db, mirror, str(tmp_path / "keys"), timeout=10, interval=3600.0, poll_interval=3600.0)
    try:
        await mirror.started()
        await a.start()
        sid = (await db.create_session({"name": "race"}))["id"]
        await db.append_messages(sid, [{"role": "user", "content": "a1"}])
        await a.share(sid, write=True, passphrase=None, expires_in=None)
        remote = await db.remote(sid)
        n = remote["members_rev"]
        me = {"head_pk": a.ctx.keys.head_pk(sid), "device_id": db.device_id}
        b = {"head_pk": b"\xed" + b"b" * 32, "device_id": "device-b"}
        c = {"head_pk": b"\xed" + b"c" * 32, "device_id": "device-c"}
        b_slot = await write_slot(second, a, sid, n + 1, [me, b])
        await db.set_remote(sid, members_rev=n + 1)  # (A's follower read B's revision through the mirror)

        real = first.set_head
        carried: list[RegistryEntry] = []

        async def c_first(entry: RegistryEntry) -> None:  # C's write lands just before A's carry of B's entry
            if entry == b_slot and not carried:
                carried.append(entry)
                await write_slot(first, a, sid, n + 1, [me, c])
            await real(entry)

        first.set_head = c_first  # type: ignore[method-assign]
        assert await a.members.restore(sid) is True
        assert carried, "the carry was not tried"
        held = [await st.get_head(b_slot.pk) for st in (first, second)]
        assert held[0] is not None and held[0] == held[1] and held[0].revision == n + 2, held
        rev, listed, _notice = await a.members.read_members(second, sid, a.ctx.keys.session_key(sid), b_slot.pk[1:])
        assert rev == n + 2
        assert {m["device_id"] for m in listed} == {db.device_id, "device-b", "device-c"}
    finally:
        await a.stop()
        await db.close()
