"""The tamper matrix and storage faults under live sync (issue 6), in-process over real folders."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from faults import FaultyStore
from sessiond.storage.database import Database
from sessiond.stores import FileStore
from sessiond.stores.registry import RegistryEntry
from sessiond.sync import dagcbor
from sessiond.sync.crypto import CHUNK_SIZE, TAG_SIZE, manifest_key, seal
from sessiond.sync.engine import Syncer, _open_manifest, head_data
from sessiond.sync.share import ImportError_
from waiting import eventually


class Recording(FileStore):
    """A file store that remembers which objects were read."""

    def __init__(self, root):
        super().__init__(root)
        self.read: set[bytes] = set()

    async def get(self, h):
        self.read.add(h)
        return await super().get(h)


@pytest.fixture
async def world():
    tmp = tempfile.mkdtemp(prefix="sd-tamper-")
    made = []

    async def node(name: str, store=None, timeout=5.0, follow=True):
        db = await Database.open(os.path.join(tmp, name + ".db"))
        s = Syncer(
            db,
            store or FileStore(os.path.join(tmp, "store")),
            os.path.join(tmp, name + "-keys"),
            interval=0.1,
            poll_interval=0.05,
            push_delay=0,
            timeout=timeout,
        )
        if follow:  # as in the daemon: every change wakes the worker
            db.listeners.append(lambda ev, s=s: s.notify(ev["session"]) if ev.get("session") else None)
        await s.start()
        made.append((db, s))
        return db, s

    yield tmp, node
    for db, s in made:
        await s.stop()
        await db.close()
    shutil.rmtree(tmp, ignore_errors=True)


async def _shared_session(node):
    db, a = await node("a", follow=False)  # pushed by hand below, so the log holds still for the matrix
    sid = (await db.create_session({"name": "tamper"}))["id"]
    await db.append_messages(sid, [{"role": "user", "content": "big " + "y" * 400_000}])  # a two-chunk page
    for i in range(20):  # enough pushes to fold level 0 into a merged page or a node
        await db.append_messages(sid, [{"role": "user", "content": f"m{i}"}])
        await a.push(sid)
    other = (await db.create_session({"name": "other"}))["id"]
    await db.append_messages(other, [{"role": "user", "content": "another session"}])
    await a.push(other)
    code = (await a.share(sid, write=False, passphrase=None, expires_in=None))["code"]
    return db, a, sid, other, code


async def test_tamper_matrix(world):
    tmp, node = world
    db, a, sid, other, code = await _shared_session(node)
    store_dir = os.path.join(tmp, "store")
    probe_store = Recording(store_dir)
    db_p, probe = await node("probe", probe_store)
    await probe.import_code(code, None)  # baseline: which objects does an import read?
    referenced = sorted(probe_store.read)
    assert len(referenced) >= 4
    obj = lambda h: os.path.join(store_dir, "objects", h.hex()[:2], h.hex())  # noqa: E731
    other_obj = next(
        p
        for p in (os.path.join(r, f) for r, _, fs in os.walk(os.path.join(store_dir, "objects")) for f in fs)
        if bytes.fromhex(os.path.basename(p)) not in referenced
    )
    big = max(referenced, key=lambda h: os.path.getsize(obj(h)))
    assert os.path.getsize(obj(big)) > CHUNK_SIZE + TAG_SIZE
    edge = CHUNK_SIZE + TAG_SIZE

    cases = []
    for h in referenced:
        cases.append(
            (
                f"bit flip in {h.hex()[:8]}",
                h,
                lambda b: b[: len(b) // 2] + bytes([b[len(b) // 2] ^ 1]) + b[len(b) // 2 + 1 :],
            )
        )
        cases.append((f"truncated {h.hex()[:8]}", h, lambda b: b[:-1]))
    for cut in (edge - 1, edge, edge + 1):
        cases.append((f"truncated at {cut}", big, lambda b, cut=cut: b[:cut]))
    cases.append(("extended", big, lambda b: b + b"\x00" * 16))
    cases.append(("swapped with another session's object", referenced[0], lambda b: open(other_obj, "rb").read()))

    own = set(await _own_objects(a, sid))
    for n, (name, h, mutate) in enumerate(cases):
        path = obj(h)
        good = open(path, "rb").read()
        open(path, "wb").write(mutate(good))
        try:
            dbx, x = await node(f"x{n}")
            with pytest.raises(ImportError_):
                await x.import_code(code, None)
            assert await dbx.session_ids() == [], name  # nothing written
            rep = await a.verify(sid)
            if h in own:  # damage to this device's own log: verify names it
                still_damaged = open(path, "rb").read() != good
                assert not rep["ok"] or not still_damaged, (name, os.path.getsize(path), rep)
        finally:
            open(path, "wb").write(good)
    assert (await a.verify(sid))["ok"]

    # a head signed by another key: the other session's head file put in place of this one's
    heads = os.path.join(store_dir, "heads")
    mine, theirs = a.keys.head_pk(sid).hex(), a.keys.head_pk(other).hex()
    good = open(os.path.join(heads, mine), "rb").read()
    open(os.path.join(heads, mine), "wb").write(open(os.path.join(heads, theirs), "rb").read())
    dbx, x = await node("forged")
    with pytest.raises(ImportError_, match="signed by another key"):
        await x.import_code(code, None)
    assert await dbx.session_ids() == []
    open(os.path.join(heads, mine), "wb").write(good)

    # a reordered manifest, re-encrypted and re-signed with the real keys (a buggy or hostile writer)
    entry = RegistryEntry.from_bytes(good)
    key = a.keys.session_key(sid)
    m_plain = _open_manifest(open(obj(entry.data[1:]), "rb").read(), entry.data[1:], key, entry.pk, entry.revision)
    m = dagcbor.decode(m_plain)
    import cbor2

    reordered = cbor2.dumps(dict(reversed(list(m.items()))))
    assert reordered != m_plain
    rev = entry.revision + 1
    ct, _ = seal(reordered, manifest_key(key, entry.pk, rev), pad=False)
    h2 = await a.store.put(ct)
    await a.store.set_head(RegistryEntry.create(a.keys.head_key(sid), rev, head_data(h2)))
    dbx, x = await node("reordered")
    with pytest.raises(ImportError_, match=r"deterministic|not valid"):
        await x.import_code(code, None)
    assert await dbx.session_ids() == []
    assert not (await a.verify(sid))["ok"]


async def _own_objects(a, sid):
    """Every object of this device's own log, as verify reads them."""
    rec = Recording(a.store.root)
    orig = a.store
    a.store = rec
    try:
        await a.verify_session(sid)
    finally:
        a.store = orig
    return rec.read


async def test_storage_faults_under_live_sync(world):
    tmp, node = world
    db_a, a = await node("a")
    sid = (await db_a.create_session({}))["id"]
    await db_a.append_messages(sid, [{"role": "user", "content": "first"}])
    code = (await a.share(sid, write=True, passphrase=None, expires_in=None))["code"]
    faulty = FaultyStore(FileStore(os.path.join(tmp, "store")))
    db_b, b = await node("b", faulty, timeout=0.5)
    await b.import_code(code, None)

    async def contents(db):
        return [m["content"] for m in await db.list_messages(sid, limit=10_000, all_chats=True)]

    n = 0
    for mode in ("down", "hang", "slow", "flip-get", "vanish", "rollback"):
        before = await contents(db_b)
        faulty.mode = mode
        await db_a.append_messages(sid, [{"role": "user", "content": f"during {mode}"}])
        await db_b.append_messages(sid, [{"role": "assistant", "content": f"b during {mode}"}])
        n += 2
        calls = faulty.calls  # B's sync meets the misbehaving store (twice: pushing, then again or pulling)
        await eventually(lambda: faulty.calls >= calls + 2, timeout=15, what=f"B's sync on the {mode} store")
        now_b = await contents(db_b)
        assert now_b[: len(before)] == before  # nothing lost or reordered on B while the store misbehaves
        if mode not in ("slow",):
            assert "b during " + mode in now_b
        faulty.mode = None
        await eventually(lambda: _same(db_a, db_b, sid), timeout=15, what="A and B the same")
    assert len(await contents(db_a)) == 1 + n
    for s in (a, b):
        rep = await s.verify(sid)
        assert rep["ok"], rep


async def _same(db_a, db_b, sid):
    xa = [m["id"] for m in await db_a.list_messages(sid, limit=10_000, all_chats=True)]
    xb = [m["id"] for m in await db_b.list_messages(sid, limit=10_000, all_chats=True)]
    return xa == xb
