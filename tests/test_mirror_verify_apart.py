"""`verify` and doctor on a device whose store is a mirror, when another device pushes to only some of its stores.

Device A syncs through a mirror of a folder store and a relay; device B imported A's session with the relay alone.
Each device pushes its own log to the stores it names: B's log is on the relay and never on the folder store. A's
verify said "store file://... lacks device B's log (its head, 2 objects): `sessiond sync` on device B sends it
again", and exited 1, doctor too: advice that cannot mend it (B never writes to the folder store), a failure for
good on any device with a NAS folder beside a relay once another device shares through the relay alone. A store of
the mirror that holds none of another device's log, which another store of the mirror holds whole, is a note; one
that holds part of it (its head, an object of it lost) is a failure as before."""

from __future__ import annotations

import asyncio
import json
import os

from nacl.signing import SigningKey

from conftest import run_cli, wait_for
from sessiond.stores import FileStore
from sessiond.stores.registry import RegistryEntry
from sessiond.sync.heads import manifest_hash_of
from sessiond.sync.keys import KeyStore
from sessiond.sync.mirror import MirrorStore
from sessiond.sync.mirrorcheck import Reads, lacking
from test_members_mirror_apart import apart, contents, folder_slot, slot_pk
from test_mirror import Relay, head


def head_pk(d, sid: str) -> bytes:
    return KeyStore(os.path.join(d.home, "keys")).head_pk(sid)


def verify(d, sid: str) -> tuple[int, dict]:
    res = run_cli(d.home, "verify", sid, "--json")
    (s,) = json.loads(res.stdout)["sessions"]
    return res.returncode, s


def doctor_verify(d) -> tuple[int, list[dict]]:
    res = run_cli(d.home, "doctor", "--json")
    return res.returncode, [f for f in json.loads(res.stdout)["findings"] if f["check"] == "verify"]


def copy_log(relay_data: str, store_dir: str, pk: bytes) -> RegistryEntry:
    """What the relay holds (B's log among it) written to the folder store too, B's head included: B's head entry."""

    async def copy() -> RegistryEntry:
        folder = FileStore(store_dir)
        try:
            for r, _dirs, files in os.walk(os.path.join(relay_data, "objects")):
                for name in files:
                    with open(os.path.join(r, name), "rb") as f:
                        data = f.read()
                    if not await folder.has(bytes.fromhex(name)):
                        await folder.put(data)
            with open(os.path.join(relay_data, "heads", pk.hex()), "rb") as f:
                entry = RegistryEntry.from_bytes(f.read())
            await folder.set_head(entry)
            return entry
        finally:
            await folder.close()

    return asyncio.run(copy())


def lose(store_dir: str, h: bytes) -> None:
    async def free() -> None:
        folder = FileStore(store_dir)
        try:
            await folder.free([h])
            assert not await folder.has(h)
        finally:
            await folder.close()

    asyncio.run(free())


def test_another_device_s_log_on_the_relay_alone_is_a_note_not_a_store_that_lost_it(make_daemon, store_dir, tmp_path):
    relay = Relay(str(tmp_path / "relay")).start()
    try:
        folder = "file://" + store_dir
        a, b, sid, code = apart(make_daemon, folder, relay.url)
        ca, cb = a.client(), b.client()
        cb.import_code(code)  # b pushes to the relay alone
        cb.append(sid, "assistant", "b1")
        assert cb.sync(sid, wait=True, timeout=30)["complete"]
        b_id, b_rev = cb.status()["device_id"], cb.devices(sid)["members_rev"]
        wait_for(lambda: "b1" in contents(a, sid), timeout=30, what="a follows b")
        # (the slot b wrote on the relay: a carries it to the folder store, sync/slotrestore.py)
        wait_for(lambda: (folder_slot(store_dir, slot_pk(a, sid)) or (0,))[0] == b_rev, timeout=30, what="slot")
        assert ca.sync(sid, wait=True, timeout=30)["complete"]

        # main: exit 1, "store file://... lacks device B's log (its head, 2 objects): `sessiond sync` on device B"
        rc, s = verify(a, sid)
        assert rc == 0 and s["ok"], s
        assert s["problems"] == [] and "repair" not in s and "elsewhere" not in s, s
        assert s["stores"] == [
            {"url": folder, "ok": True, "not_held": [b_id]},
            {"url": relay.url, "ok": True},
        ], s
        assert s["notes"] == [
            f"device {b_id}'s log is in {relay.url}, not in {folder}: {b_id} pushes to the stores it names (if they"
            f" include {folder}, `sessiond sync` on device {b_id} sends it there)"
        ], s
        text = run_cli(a.home, "verify", sid).stdout
        assert text.startswith(f"ok      {sid}") and f"note: device {b_id}'s log is in {relay.url}" in text, text
        rc, found = doctor_verify(a)
        assert rc == 0 and [f["level"] for f in found] == ["ok", "ok"], found
        assert f"device {b_id}'s log is in {relay.url}, not in {folder}" in found[1]["message"], found
        assert sid in found[1]["message"], found

        # the folder store holding b's head but an object of it lost: a store that lost part of b's log, as before
        entry = copy_log(str(tmp_path / "relay"), store_dir, head_pk(b, sid))
        rc, s = verify(a, sid)
        assert rc == 0 and s["ok"] and "notes" not in s, s
        assert s["stores"] == [{"url": folder, "ok": True}, {"url": relay.url, "ok": True}], s
        lose(store_dir, manifest_hash_of(entry))
        rc, s = verify(a, sid)
        assert rc == 1 and not s["ok"], s
        assert s["problems"] == [
            f"store {folder} lacks device {b_id}'s log (1 objects): `sessiond sync` on device {b_id} sends it again"
        ], s
        assert s["stores"][0]["ok"] is False and s["stores"][0]["objects"] == [manifest_hash_of(entry).hex()], s
        assert s["elsewhere"] == [b_id] and "notes" not in s, s
        rc, found = doctor_verify(a)
        assert rc == 1 and [f["level"] for f in found] == ["problem"], found
        assert f"lacks device {b_id}'s log" in found[0]["message"] and b_id in found[0]["fix"], found
    finally:
        relay.close()


async def test_lacking_tells_a_store_that_holds_none_of_a_read_from_one_that_holds_part_of_it(tmp_path, db):
    """(sync/mirrorcheck.py) `none`: no head of the read's keys at any revision, none of its objects."""
    whole, empty, older, objects_only = (FileStore(str(tmp_path / n)) for n in ("w", "e", "o", "j"))
    m = MirrorStore([whole, empty, older, objects_only], db.outbox, max_backoff=0.2)
    await m.started()
    key = SigningKey.generate()
    h = await whole.put(b"an object of the log")
    await whole.set_head(head(key, 2))
    await older.set_head(head(key, 1))
    await objects_only.put(b"an object of the log")
    read = Reads(objects={h}, heads={head(key, 2).pk: 2})
    rows = {r["url"]: r for r in await lacking(m, read, 30)}
    assert rows[whole.url] == {"url": whole.url, "ok": True}, rows
    assert rows[empty.url]["ok"] is False and rows[empty.url]["none"] is True, rows
    assert rows[older.url]["ok"] is False and rows[older.url]["none"] is False, rows  # its head rolled back
    assert rows[objects_only.url]["ok"] is False and rows[objects_only.url]["none"] is False, rows
    await m.close()
    for st in (whole, empty, older, objects_only):
        await st.close()
