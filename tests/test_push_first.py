"""A first push (a long run, written by the worker threads): its full levels are folded before its one
revision, so it writes one manifest and one head, not two of each (issue 17, row 3)."""

from __future__ import annotations

import concurrent.futures
import os
import threading

from sessiond.storage.database import Database
from sessiond.stores import FileStore
from sessiond.sync import keys as keys_mod
from sessiond.sync import pagecut as pagecut_mod
from sessiond.sync import pages as pages_mod
from sessiond.sync import push as push_mod
from sessiond.sync.engine import Syncer
from sessiond.sync.heads import levels_from_cbor
from sessiond.sync.keys import KeyStore


async def test_a_first_push_folds_its_levels_before_its_one_revision(tmp_path, monkeypatch):
    # pages of ~8 KB: 3,000 messages of ~100 bytes make ~40 of them, more than a level holds (FANOUT)
    monkeypatch.setattr(pages_mod, "PAGE_MAX", 8_000)
    monkeypatch.setattr(pagecut_mod, "PAGE_MAX", 8_000)
    monkeypatch.setattr(push_mod, "PAGE_MAX", 8_000)
    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    store = FileStore(os.path.join(tmp_path, "store"))
    syncer = Syncer(db, store, os.path.join(tmp_path, "keys"), timeout=10)
    heads_set = []
    set_head = store.set_head

    async def counted(entry):
        heads_set.append(entry.revision)
        await set_head(entry)

    put_then_set_head = store.put_then_set_head

    async def counted_with_objects(items, hashes, entry, **kw):  # a push's manifest and head in one batch
        heads_set.append(entry.revision)
        return await put_then_set_head(items, hashes, entry, **kw)

    monkeypatch.setattr(store, "set_head", counted)
    monkeypatch.setattr(store, "put_then_set_head", counted_with_objects)
    try:
        sid = (await db.create_session({}))["id"]
        msgs = [{"role": ("user", "assistant")[i % 2], "content": f"{i} " + "some words " * 9} for i in range(3000)]
        await db.append_messages(sid, msgs)
        res = await syncer.push(sid)
        assert heads_set == [1] and res["revision"] == 1, (heads_set, res)
        levels = levels_from_cbor((await db.sync_state(sid))["tree"])
        assert len(levels) > 1 and all(len(lv) < push_mod.FANOUT for lv in levels)
        assert levels[1][0].node and res["compaction_objects"] >= 1
        rep = await syncer.verify(sid)
        assert rep["ok"] and rep["sessions"][0]["operations"] == await db.last_seq(sid), rep
        # a short push after it commits first and folds (if a level is full) in a revision of its own
        await db.append_messages(sid, [{"role": "user", "content": "one more"}])
        res = await syncer.push(sid)
        assert res["objects"] == 2  # its page and manifest
        assert heads_set == [1, 2] + ([3] if res["compaction_objects"] else []) and res["revision"] == heads_set[-1]
    finally:
        await syncer.stop()
        await db.close()


async def test_a_fold_writes_its_nodes_side_by_side():
    """A fold that makes several nodes (a first push of 64 full pages makes 4) hands them all to the store's
    own threads before it awaits any, so that their fsyncs overlap: not one write after another."""

    class Store:  # a folder store's two ways to write, the threads' writes ending only once both are handed
        def __init__(self):
            self.handed: list[concurrent.futures.Future] = []
            self.put: list[list[bytes]] = []

        def put_in_background(self, data, h):
            self.handed.append(concurrent.futures.Future())
            if len(self.handed) == 2:
                for f in self.handed:
                    f.set_result(h)
            return self.handed[-1]

        async def put_many(self, items, hashes=None, *, timeout=None):
            self.put.append(items)
            return hashes

    store = Store()
    writer = push_mod.LogWriter("s", "d", bytes(32), store, timeout=5)  # type: ignore[arg-type]
    _, ref = writer._seal(b"a page")
    full = [pages_mod.Entry(i, i, pages_mod.PAGE_MAX, False, ref) for i in range(1, 2 * push_mod.FANOUT + 1)]
    levels = await writer.compact([full], load_records=None)  # type: ignore[arg-type]  # full pages: nothing read
    assert [len(lv) for lv in levels] == [0, 2] and all(e.node for e in levels[1])
    assert len(store.handed) == 2 and not store.put
    assert writer.written.objects == 2


def test_a_run_knows_it_is_consecutive_without_a_list_of_its_seqs():
    """LogRun.consecutive() (asked of every chunk of a long push, by the contiguity check and by the cut)
    is what comparing the seqs with a range says, for runs read, cut, joined, and with a gap."""
    from sessiond.storage.model import LogRun
    from sessiond.sync.errors import SyncError
    from sessiond.sync.logloaders import contiguous as _contiguous
    from sessiond.sync.pagecut import measure
    from sessiond.sync.pages import LogError

    def recs(seqs):
        return [(s, s, "message.add", None, 1.7e9 + s, "main", "user", f"m{s} " * (s % 5), None, None) for s in seqs]

    whole = LogRun.from_records(recs(range(1, 41)))
    gap = LogRun.from_records(recs([*range(1, 20), *range(21, 42)]))
    assert whole.consecutive() and not gap.consecutive()
    for run in (whole, gap):
        for i in (0, 1, 19, 20, 40):
            for part in (run.head(i), run.tail(i), run.head(i) + run.tail(i), run.tail(i) + run.head(i)):
                assert not part or part.consecutive() == (
                    part.seqs == list(range(part.seqs[0], part.seqs[0] + len(part)))
                )
                assert [bytes(p) for p in part.pieces()] == [(f"m{s} " * (s % 5)).encode() for s in part.seqs]
    assert not (whole.tail(30) + whole.head(10)).consecutive()  # joined in the wrong order: a gap back
    try:
        _contiguous("s", 1, 41, gap)
        raise AssertionError("a torn run was let through")
    except SyncError:
        pass
    assert _contiguous("s", 1, 40, whole) is whole
    try:
        measure(gap)
        raise AssertionError("measured a run with a gap")
    except LogError:
        pass


def test_offsets_at_a_few_places_are_the_offsets():
    """LogRun.offsets_at (where a page's contents begin and end) agrees with offsets() for contents of
    every head width, mixed widths, and operations that are not messages."""
    import random

    from sessiond.storage.model import LogRun

    rng = random.Random(3)
    for lengths in ([0, 5, 23], [24, 100, 255], [256, 1000, 65535], [65536, 70000], [3, 300, 30, 70000], [5, None]):
        recs = []
        for s in range(1, 60):
            n = rng.choice(lengths)
            content = None if n is None else "x" * n
            kind = "message.add" if content is not None else "chat.add"
            recs.append((s, s, kind, None if content is not None else "{}", 1.0, "c", "r", content, None, None))
        run = LogRun.from_records(recs)
        at = sorted(rng.sample(range(len(run) + 1), 7))
        assert run.offsets_at(at) == [run.offsets()[i] for i in at], lengths
        assert LogRun.from_records(recs).offsets_at(at) == [run.offsets()[i] for i in at], lengths


async def test_a_first_push_seals_while_its_new_key_is_written_and_publishes_once_it_is_on_disk(tmp_path, monkeypatch):
    # The key file's write (two fsyncs) waits here until the push has handed the store an object sealed
    # with that key: before, the push waited for the file before it read anything (the gate's timeout).
    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    store = FileStore(os.path.join(tmp_path, "store"))
    syncer = Syncer(db, store, os.path.join(tmp_path, "keys"), timeout=10)
    gate, on_disk = threading.Event(), threading.Event()
    real_write = keys_mod.atomic_write

    def key_write(path, data, *args, **kw):
        gate.wait(5)
        real_write(path, data, *args, **kw)
        on_disk.set()

    monkeypatch.setattr(keys_mod, "atomic_write", key_write)
    handed: list[bool] = []  # for each object handed to the store: whether the key was on disk then
    put_in_background = store.put_in_background

    def put(data, h=None):
        handed.append(on_disk.is_set())
        gate.set()
        return put_in_background(data, h)

    published: list[bool] = []
    put_then_set_head = store.put_then_set_head

    async def publish(items, hashes, entry, **kw):
        published.append(on_disk.is_set())
        return await put_then_set_head(items, hashes, entry, **kw)

    monkeypatch.setattr(store, "put_in_background", put)
    monkeypatch.setattr(store, "put_then_set_head", publish)
    try:
        sid = (await db.create_session({}))["id"]
        await db.append_messages(sid, [{"role": "user", "content": f"{i} " + "words " * 20} for i in range(3000)])
        res = await syncer.push(sid)
        assert handed and handed[0] is False, handed  # sealed and handed over before the key file was written
        assert published == [True] and res["revision"] == 1, (published, res)
        assert KeyStore(os.path.join(tmp_path, "keys")).session_key(sid) == syncer.ctx.keys.session_key(sid)
        rep = await syncer.verify(sid)
        assert rep["ok"] and rep["sessions"][0]["operations"] == await db.last_seq(sid), rep
    finally:
        await syncer.stop()
        await db.close()
