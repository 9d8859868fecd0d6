"""A members slot written by a device that uses only some of the stores of another device's mirror.

Device A syncs through a mirror of a folder store and a relay; device B through the relay alone. When B
imports the session it writes itself into the members slot on the relay: the folder store, which B never
writes to, keeps the slot's older revision. That is the slot moved on elsewhere, not the folder store losing
it: A said "the store lost the session's members slot" at its next sync and wrote the slot again, a new
revision each time another device wrote the slot, racing that device's own writes on the relay. A carries
the very entry the relay holds to the folder store instead (sync/members.py, Members.restore)."""

from __future__ import annotations

import asyncio
import json
import os

from conftest import wait_for
from sessiond.stores import FileStore, Store
from sessiond.stores.s5 import S5Store
from sessiond.sync.keys import KeyStore
from sessiond.sync.members import announce_key
from test_mirror import Relay

LOST = "the store lost the session's members slot"


def contents(d, sid):
    return [m["content"] for m in d.client().messages(sid, limit=1000)["messages"]]


def warnings(d) -> list[str]:
    with open(os.path.join(d.home, "logs", "sessiond.log")) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return [e["msg"] for e in lines if e.get("level") == "warning"]


def slot_pk(d, sid: str) -> bytes:
    ws = KeyStore(os.path.join(d.home, "keys")).write_secret(sid)
    assert ws is not None
    return b"\xed" + bytes(announce_key(ws).verify_key)


def folder_slot(store_dir: str, pk: bytes) -> tuple[int, bytes] | None:
    """(revision, data) of the members slot the folder store holds."""
    return slot_of(FileStore(store_dir), pk)


def relay_slot(url: str, pk: bytes) -> tuple[int, bytes] | None:
    """(revision, data) of the members slot the relay holds."""
    return slot_of(S5Store(url), pk)


def slot_of(store: Store, pk: bytes) -> tuple[int, bytes] | None:
    async def read():
        try:
            entry = await store.get_head(pk)
        finally:
            await store.close()
        return None if entry is None else (entry.revision, bytes(entry.data))

    return asyncio.run(read())


def joins(d, sid: str, code: str, text: str) -> int:
    """Daemon `d` imports `code` (writing itself into the members slot, on its stores only), appends `text` and
    pushes it: the members revision it wrote."""
    c = d.client()
    c.import_code(code)
    c.append(sid, "assistant", text)
    assert c.sync(sid, wait=True, timeout=30)["complete"]
    return c.devices(sid)["members_rev"]


def apart(make_daemon, folder: str, relay: str):
    """Device a on a mirror of `folder` and `relay`, b on `relay` alone; a session of a's ("a1"), shared read-write
    and pushed: (a, b, the session's id, its code)."""
    a = make_daemon([folder, relay]).start()
    b = make_daemon(relay).start()
    sid, code = shared_pushed(a)
    return a, b, sid, code


def shared_pushed(a, name: str = "apart") -> tuple[str, str]:
    """A session of daemon `a`'s ("a1"), shared read-write and pushed: (its id, its code)."""
    ca = a.client()
    sid = ca.create_session(name=name)["id"]
    ca.append(sid, "user", "a1")
    code = ca.share(sid, write=True)["code"]
    assert ca.sync(sid, wait=True, timeout=30)["complete"]
    return sid, code


def test_a_slot_another_device_wrote_to_the_relay_alone_is_not_lost_from_the_folder_store(
    make_daemon, store_dir, tmp_path
):
    relay = Relay(str(tmp_path / "relay")).start()
    try:
        a, b, sid, code = apart(make_daemon, "file://" + store_dir, relay.url)
        ca, cb = a.client(), b.client()
        pk = slot_pk(a, sid)
        shared = folder_slot(store_dir, pk)
        assert shared is not None

        b_rev = joins(b, sid, code, "b1")  # b writes itself into the slot, on the relay only
        assert b_rev > shared[0]
        wait_for(lambda: "b1" in contents(a, sid), timeout=30, what="a follows b")
        for _ in range(2):  # (a's repair check runs before each sync's pull: the second sees the slot read)
            assert ca.sync(sid, wait=True, timeout=30)["complete"]
        ca.append(sid, "user", "a2")
        assert ca.sync(sid, wait=True, timeout=30)["complete"]
        wait_for(lambda: "a2" in contents(b, sid), timeout=30, what="b follows a")

        assert not [w for w in warnings(a) if LOST in w], warnings(a)
        # not written over with a revision past b's: b's own entry carried to the folder store
        assert ca.devices(sid)["members_rev"] == cb.devices(sid)["members_rev"] == b_rev
        carried = folder_slot(store_dir, pk)
        assert carried is not None and carried[0] == b_rev, (carried, b_rev)
        assert contents(a, sid) == contents(b, sid) == ["a1", "b1", "a2"]
    finally:
        relay.close()


def test_a_device_on_the_folder_store_alone_is_followed_after_one_on_the_relay_alone_wrote_the_slot(
    make_daemon, store_dir, tmp_path
):
    """The mirror's device carries the slot between its stores: B (relay alone) writes it, then D (folder store
    alone) imports and writes itself in. Had the folder store kept the revision before B's, D would write its
    own slot at the revision of B's, on the folder store: two slots of one revision, and A, reading one of them,
    would follow only B or only D."""
    relay = Relay(str(tmp_path / "relay")).start()
    try:
        folder = "file://" + store_dir
        a = make_daemon([folder, relay.url]).start()
        b = make_daemon(relay.url).start()
        d = make_daemon(folder).start()
        ca, cb, cd = a.client(), b.client(), d.client()
        sid = ca.create_session(name="apart")["id"]
        ca.append(sid, "user", "a1")
        code = ca.share(sid, write=True)["code"]
        cb.import_code(code)
        cb.append(sid, "assistant", "b1")
        assert cb.sync(sid, wait=True, timeout=30)["complete"]
        b_rev = cb.devices(sid)["members_rev"]
        pk = slot_pk(a, sid)
        # a's follower, reading b's revision through the mirror, carries it to the folder store: no `sync` on a
        wait_for(lambda: (folder_slot(store_dir, pk) or (0,))[0] == b_rev, timeout=30, what="b's slot carried")

        cd.import_code(code)
        cd.append(sid, "assistant", "d1")
        assert cd.sync(sid, wait=True, timeout=30)["complete"]
        wait_for(lambda: "d1" in contents(a, sid), timeout=30, what="a follows d")
        ca.append(sid, "user", "a2")
        assert ca.sync(sid, wait=True, timeout=30)["complete"]
        wait_for(lambda: "a2" in contents(b, sid), timeout=30, what="b follows a")
        wait_for(lambda: "a2" in contents(d, sid), timeout=30, what="d follows a")
        assert sorted(contents(a, sid)) == ["a1", "a2", "b1", "d1"]  # (b1 and d1 in either order: concurrent)
        assert not [w for w in warnings(a) if LOST in w], warnings(a)
    finally:
        relay.close()


def writers(d, sid: str) -> set[str]:
    return {x["device"] for x in d.client().devices(sid)["devices"] if x["writer"]}


def test_one_revision_of_the_slot_written_apart_on_each_store_of_a_mirror_is_merged(make_daemon, store_dir, tmp_path):
    """B (relay alone) and C (folder store alone) each write the slot's next revision, N, to their one store while A,
    the mirror's device and the only one on both, is off: two slots of revision N, one listing B, the other C. A read
    through the mirror takes one of them (the same on every device); neither store lost anything, so nothing was
    written: A followed only the writer its slot listed, the other's messages never reached it, and B and C never
    learnt of each other. A writes revision N + 1 to both stores, listing the writers of both."""
    relay = Relay(str(tmp_path / "relay")).start()
    try:
        folder = "file://" + store_dir
        a = make_daemon([folder, relay.url]).start()
        b, c = make_daemon(relay.url).start(), make_daemon(folder).start()
        sid, code = shared_pushed(a)
        pk = slot_pk(a, sid)
        a.stop()
        joins(b, sid, code, "b1")
        joins(c, sid, code, "c1")
        on_folder, on_relay = folder_slot(store_dir, pk), relay_slot(relay.url, pk)
        assert on_folder is not None and on_relay is not None
        assert on_folder[0] == on_relay[0] and on_folder[1] != on_relay[1]  # (two slots of one revision)
        n = on_folder[0]

        a.start()
        wait_for(lambda: {"b1", "c1"} <= set(contents(a, sid)), timeout=30, what="a follows both b and c")
        merged = folder_slot(store_dir, pk)
        assert merged is not None and merged[0] == n + 1 and relay_slot(relay.url, pk) == merged
        for d in (b, c):  # each reads the merged slot on its one store: the three writers
            assert d.client().sync(sid, wait=True, timeout=30)["complete"]
        names = writers(a, sid)
        assert len(names) == 3 and writers(b, sid) == writers(c, sid) == names, names
        assert not [w for w in warnings(a) if LOST in w], warnings(a)
    finally:
        relay.close()
