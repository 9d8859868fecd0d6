"""A push's work on the event loop stays small (issue 17, the sync-on append tail): the manifest, the
recorded tree and the outbox record are put together from each entry's encoding made once, byte for byte
what dagcbor.encode makes of them, and a steady push decodes no tree."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile

import pytest

from sessiond.storage.database import Database
from sessiond.stores.file import FileStore
from sessiond.stores.registry import RegistryEntry
from sessiond.sync import dagcbor, heads
from sessiond.sync.crypto import seal
from sessiond.sync.engine import Syncer
from sessiond.sync.heads import encode_levels, levels_to_cbor
from sessiond.sync.manifest import encode_manifest
from sessiond.sync.pages import Entry
from sessiond.sync.push import LogWriter
from sessiond.sync.revision import Revision as _Revision


def _entry(rng: random.Random, first: int) -> Entry:
    _, ref = seal(rng.randbytes(rng.randint(1, 600)), rng.randbytes(32))
    n = rng.choice([1, 7, 300, 70_000])
    kind = rng.random()
    return Entry(first, first + n - 1, rng.choice([5, 300, 70_000, 1 << 33]), kind < 0.3, ref, 0.3 <= kind < 0.4)


def test_manifest_tree_and_outbox_record_are_the_bytes_dagcbor_makes():
    rng = random.Random(17)
    for _ in range(60):
        levels = [[_entry(rng, rng.randint(1, 1 << 40)) for _ in range(rng.choice([0, 1, 15, 16, 30]))]]
        levels += [[_entry(rng, rng.randint(1, 1 << 40))] for _ in range(rng.randint(0, 3))]
        prev = b"\x01\x55\x1e\x20" + rng.randbytes(32) if rng.random() < 0.7 else None
        sid, device, pk = "s" * rng.randint(1, 40), "d\u00e9v" * rng.randint(1, 3), b"\xed" + rng.randbytes(32)
        rev, last, lam = rng.choice([1, 23, 24, 255, 256, 1 << 32]), rng.randint(0, 1 << 62), rng.randint(0, 1 << 63)
        m = {"d": device, "k": pk, "l": levels_to_cbor(levels), "n": last, "r": rev, "s": sid, "v": 1}
        m |= {"ty": "sessiond/manifest", "lam": lam}
        if prev is not None:
            m["prev"] = dagcbor.Link(prev)
        plain = encode_manifest(sid, device, rev, pk, last, lam, levels, prev)
        assert plain == dagcbor.encode(m)
        tree = encode_levels(levels)
        assert tree == dagcbor.encode(levels_to_cbor(levels))
        made = _Revision(rev, plain, last, tree, prev, levels)
        assert made.pending() == dagcbor.encode({"m": plain, "r": rev, "s": last, "t": levels_to_cbor(levels)})
        back = _Revision.recorded(made.pending())  # as a push cut short reads it back
        assert (back.rev, back.plain, back.seq, back.tree, back.prev) == (rev, plain, last, tree, prev)


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="sd-tail-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


async def test_a_steady_push_decodes_no_tree_and_a_reset_tree_is_read_again(tmp, monkeypatch):
    db = await Database.open(os.path.join(tmp, "db.sqlite"))
    syncer = Syncer(db, FileStore(os.path.join(tmp, "store")), os.path.join(tmp, "keys"), push_delay=0, timeout=10)
    try:
        sid = (await db.create_session({"name": "tail"}))["id"]
        for i in range(20):  # a level fills and folds on the way (compaction)
            await db.append_messages(sid, [{"role": "user", "content": f"m{i}.{k}"} for k in range(i % 3 + 1)])
            await syncer.pusher.push(sid)
        decoded: list[bytes | None] = []
        real = heads.levels_from_cbor

        def counting(data):
            decoded.append(data)
            return real(data)

        monkeypatch.setattr("sessiond.sync.pusher.levels_from_cbor", counting)
        await db.append_messages(sid, [{"role": "user", "content": "steady"}])
        await syncer.pusher.push(sid)
        assert decoded == []  # the levels this process recorded, not the tree decoded again

        # what another path records (a repair, a move to another store) is read from the database
        await db.save_sync_state(sid, pushed_seq=0, tree=None, pending=None)
        await syncer.pusher.push(sid)
        assert decoded == [None]
        state = await db.sync_state(sid)
        assert state["pushed_seq"] == await db.last_seq(sid) and state["pending"] is None
        assert state["tree"] == encode_levels(real(state["tree"]))
        report = await syncer.verify(sid)
        assert report["ok"], report
    finally:
        await syncer.stop()
        await db.close()


async def test_a_push_gives_the_loop_back_between_its_lookups_and_between_sealing_and_signing(tmp, monkeypatch):
    """The push's start up to its first bulk read was one loop step (300-550 us in the daemon), and so were
    the manifest's sealing and the head's signature: an append that arrived meanwhile waited them out. A
    task that counts its own turns of the loop shows that other work now runs in between."""
    db = await Database.open(os.path.join(tmp, "db.sqlite"))
    syncer = Syncer(db, FileStore(os.path.join(tmp, "store")), os.path.join(tmp, "keys"), push_delay=0, timeout=10)
    turns = [0]

    async def other_work() -> None:
        while True:
            turns[0] += 1
            await asyncio.sleep(0)

    marks: dict[str, int] = {}

    def marking(name: str, fn):
        def wrapped(*a, **k):
            marks[name] = turns[0]
            return fn(*a, **k)

        return wrapped

    ticker = asyncio.ensure_future(other_work())
    try:
        sid = (await db.create_session({"name": "steps"}))["id"]
        await db.append_messages(sid, [{"role": "user", "content": "first"}])
        await syncer.pusher.push(sid)  # (the session's key made, its head read: the steady case below)
        await db.append_messages(sid, [{"role": "user", "content": "second"}])
        monkeypatch.setattr(db, "has_session", marking("start", db.has_session))
        monkeypatch.setattr(db, "log_run", marking("read", db.log_run))
        monkeypatch.setattr(LogWriter, "seal_manifest", marking("sealed", LogWriter.seal_manifest))
        monkeypatch.setattr(RegistryEntry, "create", marking("signed", RegistryEntry.create))
        await syncer.pusher.push(sid)
        assert marks["read"] - marks["start"] >= 3, marks  # three turns of the loop for others on the way
        assert marks["signed"] > marks["sealed"], marks
        assert (await db.sync_state(sid))["pushed_seq"] == await db.last_seq(sid)
    finally:
        ticker.cancel()
        await syncer.stop()
        await db.close()


def test_a_manifest_read_quickly_is_the_one_read_strictly_and_a_non_canonical_one_is_still_refused():
    import cbor2

    from sessiond.sync.manifest import parse_manifest
    from sessiond.sync.pages import LogError

    rng = random.Random(5)
    refs = [_entry(rng, 1).ref for _ in range(2)]
    levels = [[Entry(10, 20, 70, False, refs[0])], [Entry(1, 9, 50, True, refs[1])]]  # level 1 holds the older
    pk, prev = b"\xed" + bytes(32), b"\x01\x55\x1e\x20" + bytes(32)
    plain = encode_manifest("sid", "dev", 3, pk, 20, 44, levels, prev)
    man = parse_manifest(plain, sid="sid", head_pk=pk, rev=3)
    assert (man.device, man.last_seq, man.lamport, man.prev, man.levels) == ("dev", 20, 44, prev, levels)
    m = dagcbor.decode(plain)
    shuffled = cbor2.dumps({k: dagcbor.canon(m[k]) for k in reversed(list(m))})  # keys out of DAG-CBOR order
    with pytest.raises(LogError, match="not deterministic DAG-CBOR"):
        parse_manifest(shuffled, sid="sid", head_pk=pk, rev=3)
    del m["lam"]  # an older manifest without a Lamport value: valid, read the strict way
    assert parse_manifest(dagcbor.encode(m), sid="sid", head_pk=pk, rev=3).lamport == 0
    with pytest.raises(LogError, match="replayed"):
        parse_manifest(plain, sid="sid", head_pk=pk, rev=4)


async def test_a_push_reads_its_session_row_not_its_texts(tmp, monkeypatch):
    """A push checks that its session is still here (deleted: skipped) by the row's key alone: it read the whole
    session with its texts (system prompt, initial messages, metadata: megabytes at most) at every push, and a
    deleted session's check built the refusal's guess of the session meant (a scan of every session)."""
    db = await Database.open(os.path.join(tmp, "db.sqlite"))
    syncer = Syncer(db, FileStore(os.path.join(tmp, "store")), os.path.join(tmp, "keys"), push_delay=0, timeout=10)
    try:
        sid = (await db.create_session({"name": "rowonly", "system_prompt": "p" * 10_000}))["id"]
        await db.append_messages(sid, [{"role": "user", "content": "first"}])

        async def no_texts(*a, **k):
            raise AssertionError("a push read the session with its texts")

        monkeypatch.setattr(db, "get_session", no_texts)
        await syncer.pusher.push(sid)
        assert (await db.sync_state(sid))["pushed_seq"] == await db.last_seq(sid)
        monkeypatch.undo()
        await db.delete_session(sid)
        assert (await syncer.pusher.push(sid))["skipped"] == "deleted"
    finally:
        await syncer.stop()
        await db.close()


async def test_a_push_reads_the_remotes_row_once_before_it_writes(tmp, monkeypatch):
    """The members slot it names (read before the key) and the store it names are one read of the row: the store
    was a second read, right after the first with no wait between (store_for). The push's end reads it again (a
    writer not announced yet announces itself)."""
    db = await Database.open(os.path.join(tmp, "db.sqlite"))
    syncer = Syncer(db, FileStore(os.path.join(tmp, "store")), os.path.join(tmp, "keys"), push_delay=0, timeout=10)
    try:
        sid = (await db.create_session({}))["id"]
        await db.append_messages(sid, [{"role": "user", "content": "first"}])
        await syncer.pusher.push(sid)  # (the session's key made: the steady case below)
        await db.append_messages(sid, [{"role": "user", "content": "second"}])
        reads: list[str] = []
        real = db.remote

        async def remote(s):
            reads.append(s)
            return await real(s)

        monkeypatch.setattr(db, "remote", remote)
        await syncer.pusher.push(sid)
        assert (await db.sync_state(sid))["pushed_seq"] == await db.last_seq(sid)
        assert reads == [sid, sid], reads  # before: three
    finally:
        await syncer.stop()
        await db.close()
