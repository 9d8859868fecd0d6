"""What a follower's pull costs (issue 17, the follower's CPU): it reads the members slot's object only
when the slot changed, and each member's head once."""

from __future__ import annotations

import os
import time

from devices import count_calls, count_gets
from sessiond.storage import fsutil
from sessiond.stores.file import FileStore


async def test_a_pull_reads_the_members_object_only_when_the_slot_changed_and_each_head_once(devices):
    store_b = FileStore(devices.store_path)
    a, b = await devices.open(store_b=store_b)
    dba, dbb = devices.dba, devices.dbb
    await a.start()
    sid = await devices.shared("followed", write=True)
    await b.follower.pull(sid)
    gets, heads = count_gets(store_b), count_calls(store_b, "get_head")

    await dba.append_messages(sid, [{"role": "user", "content": f"news {i}"} for i in range(3)])
    await a.sync_now(sid, wait=True, timeout=10)
    assert await b.follower.pull(sid) == 3
    # the members slot's head and A's head, each read once; A's manifest and its new page
    assert len(heads) == 2 and len(set(heads)) == 2, heads
    assert len(gets) == 2, gets

    # a new member in the slot: its object is read again, and the new member followed
    newcomer = {"head_pk": b"\xed" + bytes(range(32)), "device_id": "newcomer"}
    await a.members.ensure_member(sid, extra=[newcomer])
    gets.clear()
    await b.follower.pull(sid)
    assert len(gets) == 1  # the members object (nothing new in A's log)
    assert newcomer["head_pk"] in {bytes(p["head_pk"]) for p in await dbb.peers(sid)}
    assert len(await dbb.list_messages(sid)) == 4


async def test_an_import_reads_the_members_slot_once_and_no_device_reads_back_its_own_members_write(
    devices, monkeypatch
):
    """Issue 17 (a share and an import, not their appends): a first share does not look for a members slot
    that cannot exist yet; the import's first look at the store and its read of the members slot share one
    head read, and the importer adds itself on what it read (the store refuses a stale revision); neither
    device's follower reads back the members object it wrote itself; and the importer's two key files are
    made durable by one fsync of their folder."""
    store_a = FileStore(devices.store_path)
    store_b = FileStore(devices.store_path)
    # A's own follower polls only at its start: its pulls are the test's (one of its polls running beside the
    # test's pull of B's members object read that object a second time, and the count below with it)
    a, b = await devices.open(store_a=store_a, store_b=store_b, a={"interval": 3600, "poll_interval": 3600})
    dba = devices.dba
    await a.start()
    sid = (await dba.create_session({"name": "shared"}))["id"]
    await dba.append_messages(sid, [{"role": "user", "content": "first"}])
    a_heads = count_calls(store_a, "get_head")
    code = (await a.share(sid, write=True, passphrase=None, expires_in=None))["code"]
    slot = b"\xed" + bytes((await dba.remote(sid))["announce_pk"])
    assert slot not in a_heads  # a slot signed by a key made in this share cannot exist: not looked for
    a_gets = count_gets(store_a)
    shared_obj = (await store_a.get_head(slot)).data[1:33]
    await a.follower.pull(sid)  # A's follower: the slot holds what A itself wrote
    assert shared_obj not in a_gets, "A read back the members object it wrote"

    gets, heads = count_gets(store_b), count_calls(store_b, "get_head")
    synced: list[str] = []
    real_fsync_dir = fsutil.fsync_dir
    monkeypatch.setattr(fsutil, "fsync_dir", lambda p: (synced.append(p), real_fsync_dir(p))[1])
    res = await b.import_code(code, None)
    assert synced.count(b.keys.sessions_dir) == 1, synced
    assert b.keys.session_key(sid) == a.keys.session_key(sid)
    assert b.keys.write_secret(sid) == a.keys.write_secret(sid)
    assert res["new"] == 2 and res["capability"] == "read-write"
    assert heads.count(slot) == 1, heads  # the import's look and read; B adds itself on what it read
    assert gets.count(shared_obj) == 1, gets
    written = (await store_b.get_head(slot)).data[1:33]
    assert written != shared_obj  # B added itself: a new members object
    gets.clear()
    await b.follower.pull(sid)
    assert written not in gets, "B read back the members object it wrote"
    await a.follower.pull(sid)  # A reads B's members object (news to A), and follows B from now on
    assert a_gets.count(written) == 1
    assert len(await dba.peers(sid)) == 1


async def test_a_pull_opens_no_key_file_and_a_deleted_key_is_gone_from_memory_too(devices, monkeypatch):
    """The key store keeps the session files it read or wrote (a pull read the key, the earlier keys and
    the rekey record from disk each time); what it writes or deletes it changes in memory too."""
    from sessiond.sync import keys as keys_mod

    a, b = await devices.open()
    dba = devices.dba
    await a.start()
    sid = (await dba.create_session({"name": "keys"}))["id"]
    await dba.append_messages(sid, [{"role": "user", "content": "first"}])
    await b.import_code((await a.share(sid, write=True, passphrase=None, expires_in=None))["code"], None)
    await b.follower.pull(sid)
    opened: list[str] = []
    real = keys_mod._read_file
    monkeypatch.setattr(keys_mod, "_read_file", lambda p: (opened.append(p), real(p))[1])
    await dba.append_messages(sid, [{"role": "user", "content": "news"}])
    await a.sync_now(sid, wait=True, timeout=10)
    assert await b.follower.pull(sid) == 1
    assert not [p for p in opened if p.startswith(b.keys.folder)], opened  # B had read them before

    key = b.keys.session_key(sid)
    assert key is not None and keys_mod.KeyStore(os.path.join(devices.tmp, "kb")).session_key(sid) == key
    b.keys.delete_session_key(sid)
    assert b.keys.session_key(sid) is None and b.keys.write_secret(sid) is None
    assert not [f for f in os.listdir(b.keys.sessions_dir) if f.startswith(sid)]
    new = b.keys.session_key(sid, create=True)
    assert new != key and keys_mod.KeyStore(os.path.join(devices.tmp, "kb")).session_key(sid) == new


async def test_a_polled_pull_does_not_read_a_members_slot_the_store_says_is_unchanged(devices):
    """A follower's poll knows which heads changed in the store (here: the folder's listing). A pull it
    makes for a device's new head reads that head, not the members slot's head too, while the slot did
    not change; once the slot changes, the poll reads it (and follows the new member)."""
    store_b = FileStore(devices.store_path)
    a, b = await devices.open(store_b=store_b)
    dba, dbb = devices.dba, devices.dbb
    await a.start()
    sid = (await dba.create_session({"name": "polled"}))["id"]
    await dba.append_messages(sid, [{"role": "user", "content": "first"}])
    await b.import_code((await a.share(sid, write=True, passphrase=None, expires_in=None))["code"], None)
    slot = b"\xed" + bytes((await dbb.remote(sid))["announce_pk"])
    await b.follower.poll()  # the first look: every shared session, in full
    heads = count_calls(store_b, "get_head")

    await dba.append_messages(sid, [{"role": "user", "content": "news"}])
    await a.sync_now(sid, wait=True, timeout=10)
    await b.follower.poll()
    assert len(await dbb.list_messages(sid)) == 2
    assert slot not in heads and heads == [a.keys.head_pk(sid)], heads

    newcomer = {"head_pk": b"\xed" + bytes(range(32)), "device_id": "newcomer"}
    await a.members.ensure_member(sid, extra=[newcomer])
    heads.clear()
    await b.follower.poll()
    assert slot in heads
    assert newcomer["head_pk"] in {bytes(p["head_pk"]) for p in await dbb.peers(sid)}


async def test_an_importer_adding_itself_on_a_slot_that_moved_on_reads_it_and_keeps_every_member(devices):
    """The importer adds itself on the slot as its import read it; if another writer changed the slot
    meanwhile, the store refuses the stale revision and the importer reads the slot again and merges:
    nobody is dropped."""
    a, b = await devices.open()
    dba, dbb = devices.dba, devices.dbb
    await a.start()
    sid = (await dba.create_session({"name": "raced"}))["id"]
    await dba.append_messages(sid, [{"role": "user", "content": "first"}])
    code = (await a.share(sid, write=True, passphrase=None, expires_in=None))["code"]
    newcomer = {"head_pk": b"\xed" + bytes(range(32)), "device_id": "newcomer"}
    real_apply = dbb.apply_remote

    async def apply_after_a_change(*args, **kw):  # between B's read of the slot and its write
        await a.members.ensure_member(sid, extra=[newcomer])
        return await real_apply(*args, **kw)

    dbb.apply_remote = apply_after_a_change
    await b.import_code(code, None)
    remote = await dbb.remote(sid)
    rev, members, _ = await a.members.read_members(
        a.ctx.store, sid, a.keys.session_key(sid), bytes(remote["announce_pk"])
    )
    assert rev == 3 and remote["members_rev"] == 3  # A's share, A's change, B's merge
    # the members object B put for the refused revision is referenced by no head: gc's to free
    assert len(await dbb.released.due(time.time() + 1)) == 1
    assert {m["head_pk"] for m in members} == {a.keys.head_pk(sid), newcomer["head_pk"], b.keys.head_pk(sid)}
