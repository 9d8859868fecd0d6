"""How far a kept writer carried a dropped writer's log past the notice, said in the old members slot
(docs/FORMATS.md §6, "Carried past the notice"): a dropped writer takes only the entries a writer the rekey
kept signed. Real daemons over one file:// store; the forger is a dropped writer's keys used directly on the
store, as a modified sessiond would."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os

from nacl.signing import SigningKey

from conftest import wait_for, write_config
from sessiond.stores.file import FileStore
from sessiond.stores.registry import RegistryEntry
from sessiond.sync import dagcbor
from sessiond.sync.crypto import members_key, open_unpadded
from sessiond.sync.keys import KeyStore
from sessiond.sync.members import announce_key
from sessiond.sync.membersobject import SALT_LEN, seal_small
from sessiond.sync.rekeycarried import carried_entry
from test_rekey_forgery import _device, _messages, _three_writers
from test_sync_races import _every_device_alike, _held, _rekey_held_while


async def _old_slot(store_dir: str, home: str, sid: str) -> tuple[FileStore, RegistryEntry, dict]:
    """The old members slot, read with the old keys of the device of `home` (a dropped writer's): its entry
    and its object."""
    ks = KeyStore(os.path.join(home, "keys"))
    old_key, old_write = ks.session_key(sid), ks.write_secret(sid)
    assert old_key is not None and old_write is not None
    store = FileStore(store_dir, create=False)
    entry = await store.get_head(b"\xed" + bytes(announce_key(old_write).verify_key))
    assert entry is not None
    h, salt = entry.data[1:33], entry.data[33:]
    return store, entry, dagcbor.decode(open_unpadded(await store.get(h), members_key(old_key, salt)))


async def _write_entries(store_dir: str, home: str, sid: str, signers: list[SigningKey], head_pk: bytes) -> None:
    """With the old keys of the device of `home`, write the old members slot one revision on, its notice kept,
    with an entry for head key `head_pk` signed by each of `signers`, carrying far past anything written."""
    store, entry, slot = await _old_slot(store_dir, home, sid)
    assert "rekey" in slot and "c" not in slot  # the notice, and no kept writer's entry
    ks = KeyStore(os.path.join(home, "keys"))
    old_key, old_write = ks.session_key(sid), ks.write_secret(sid)
    assert old_key is not None and old_write is not None
    slot_key = announce_key(old_write)
    slot["c"] = [carried_entry(key, slot["rekey"], head_pk, 1 << 40) for key in signers]
    salt = os.urandom(SALT_LEN)
    h = await store.put(seal_small(dagcbor.encode(slot), members_key(old_key, salt)))
    await store.set_head(RegistryEntry.create(slot_key, entry.revision + 1, b"\x1e" + h + salt))


def test_a_dropped_writer_takes_no_entry_a_writer_the_rekey_did_not_keep_signed(make_daemon, store_dir):
    """D wrote while R's rekey dropping it was under way, and no kept device read it: held on D only. A writer
    the rekey dropped holds the old slot's key as D does, and writes entries into it saying D's log was carried
    far past that, signed by its own head key (the forger's: D's keys here) and by a key of no member: D takes
    neither, and goes on counting what it wrote past the notice's freeze as held here only (`rm` refuses)."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    write_config(k.home, poll_interval=3600, sync_interval=3600)  # K does not pull D while R rekeys
    k.restart()
    flag = _held(r, "rekey.notice_put")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        rekeyed = pool.submit(r.client().rekey, sid, drop=[_device(d)])
        wait_for(lambda: os.path.exists(flag), timeout=20)  # D's log frozen, the notice not out
        d.client().append(sid, "assistant", "D while R rekeys")
        d.client().sync(sid, wait=True, timeout=10)
        os.remove(flag)
        assert rekeyed.result(timeout=30)["dropped"] == [_device(d)]
    dropped = KeyStore(os.path.join(d.home, "keys"))
    signers = [dropped.head_key(sid), SigningKey(os.urandom(32))]
    asyncio.run(_write_entries(store_dir, d.home, sid, signers, dropped.head_pk(sid)))
    said = d.client().sync(sid, wait=True, timeout=10)["sessions"][sid]
    assert "1 message" in said["pull_error"] and "held here only" in said["pull_error"], said["pull_error"]
    assert d.client().get_session(sid)["held_here"] == {"messages": 1, "changes": 0, "known": True}
    assert "D while R rekeys" not in _messages(r, sid)


def test_a_kept_writer_killed_before_it_said_how_far_it_carried_says_it_at_its_next_start(make_daemon, store_dir):
    """K took R's notice, freezing D's log later than R did (it had pulled D meanwhile), switched, and was killed
    before it wrote how far to the old slot: its rekey record, kept until then, has it written at its next pull,
    and D is told that nothing it wrote is held here only."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    k.env["SESSIOND_CRASH_AT"] = "rekey:carry"
    k.restart()
    _rekey_held_while(r, d, sid, "rekey.notice_put", k)  # K applies "D while R rekeys", past R's freeze of D
    assert k.proc is not None and k.proc.wait(30) == 137  # K's next pull takes the notice: killed
    assert "c" not in asyncio.run(_old_slot(store_dir, d.home, sid))[2]
    del k.env["SESSIOND_CRASH_AT"]
    k.start()
    _every_device_alike(make_daemon, store_dir, r, k, sid)
    wait_for(lambda: "c" in asyncio.run(_old_slot(store_dir, d.home, sid))[2], timeout=30)
    d.client().sync(sid, wait=True, timeout=10)
    got = d.client().get_session(sid)
    assert got["access"] == "revoked" and "held_here" not in got, got.get("held_here")
