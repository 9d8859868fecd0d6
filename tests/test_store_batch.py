"""The folder store's batched writes (stores/filebatch.py): the writes of one turn of the event loop go
in one job, objects made durable (each folder fsynced once, objects/ too when a folder is new) before any
head of the batch is written; a crash at any moment leaves every head naming whole objects."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from nacl.signing import SigningKey

from conftest import eventually, wait_for
from sessiond.storage import fsutil
from sessiond.stores import FileStore, StaleHead, StoreError, filebatch
from sessiond.stores.cid import digest
from sessiond.stores.registry import RegistryEntry
from sessiond.sync.heads import head_data, manifest_hash_of

KEY = SigningKey(bytes(range(32)))
PK = b"\xed" + bytes(KEY.verify_key)


def _head(rev: int, h: bytes) -> RegistryEntry:
    return RegistryEntry.create(KEY, rev, head_data(h))


@pytest.fixture
def trace(monkeypatch):
    """Every file the batch writes and every folder fsynced, in order."""
    seen: list[tuple[str, str]] = []
    real_write, real_fsync_dir = filebatch._write_file, fsutil.fsync_dir

    def write_file(path, data, **kw):
        seen.append(("write", path))
        real_write(path, data, **kw)

    def fsync_dir(path):
        seen.append(("fsync_dir", path))
        real_fsync_dir(path)

    monkeypatch.setattr(filebatch, "_write_file", write_file)
    monkeypatch.setattr(fsutil, "fsync_dir", fsync_dir)
    return seen


async def test_a_new_object_folder_is_made_durable_in_objects(tmp_path, trace):
    """A put into a folder of objects/ that did not exist fsyncs objects/ as well as the new folder:
    else a crash could lose the folder, and with it an object a durable head names. (Before the batched
    writer a put fsynced only the object's own folder.)"""
    store = FileStore(str(tmp_path / "store"))
    h = await store.put(b"one object")
    synced = [p for kind, p in trace if kind == "fsync_dir"]
    assert os.path.dirname(store._obj_path(h)) in synced
    assert store._objects in synced
    trace.clear()
    assert await store.put_many([b"one object"], [h]) == [h]  # there already: nothing written
    assert trace == []
    data = next(d for d in (b"x%d" % i for i in range(10_000)) if digest(d)[:1] == h[:1])
    await store.put(data)  # into a folder there already: only that folder fsynced
    assert [p for kind, p in trace if kind == "fsync_dir"] == [os.path.dirname(store._obj_path(h))]
    await store.close()


def test_a_new_object_folder_is_made_durable_by_the_writer_threads_too(tmp_path, trace):
    """The same for the writer threads of a long push (FileStore.put_in_background)."""
    store = FileStore(str(tmp_path / "store"))
    h = store.put_in_background(b"a page of a long push").result(timeout=10)
    synced = [p for kind, p in trace if kind == "fsync_dir"]
    assert store._objects in synced
    assert synced.index(store._objects) < synced.index(os.path.dirname(store._obj_path(h)))
    asyncio.run(store.close())


def test_the_writer_threads_write_an_object_given_as_its_pieces(tmp_path, monkeypatch):
    """A long push hands a page's sealed chunks to FileStore.put_in_background unjoined: the file is
    their join, under its hash, written whole however little each os.writev call takes."""
    store = FileStore(str(tmp_path / "store"))
    pieces = [os.urandom(n) for n in (262_160, 262_160, 1000, 0, 77)]
    real_writev = os.writev
    calls: list[int] = []

    def writev(fd, buffers):  # a kernel that takes at most 100,003 bytes a call
        taken, left = [], 100_003
        for b in buffers:
            taken.append(memoryview(b)[:left])
            left -= len(taken[-1])
            if not left:
                break
        calls.append(real_writev(fd, taken))
        return calls[-1]

    monkeypatch.setattr(fsutil.os, "writev", writev)
    data = b"".join(pieces)
    h = store.put_in_background(pieces).result(timeout=10)
    assert h == digest(data) and len(calls) > 5
    with open(store._obj_path(h), "rb") as f:
        assert f.read() == data
    assert store.put_in_background(pieces, h).result(timeout=10) == h  # there already
    with pytest.raises(StoreError, match="exceeds"):
        store.put_in_background([bytes(1 << 19)] * 3).result(timeout=10)
    asyncio.run(store.close())


async def test_one_turn_of_writes_is_one_batch_objects_durable_before_heads(tmp_path, trace):
    store = FileStore(str(tmp_path / "store"))
    first = await store.put(b"first")
    await store.set_head(_head(1, first))
    trace.clear()
    batches = store.batch.batches
    datas = [b"page %d" % i for i in range(5)]
    # five pushes' pages and a head (its objects stored before) asked for in the same turn
    results = await asyncio.gather(*(store.put(d) for d in datas), store.set_head(_head(2, first)))
    assert store.batch.batches == batches + 1
    assert results[:5] == [digest(d) for d in datas]
    heads_at = next(i for i, (kind, p) in enumerate(trace) if kind == "write" and p.startswith(store._heads))
    before = trace[:heads_at]
    for d in datas:  # every object written and its folder fsynced before the head is written
        path = store._obj_path(digest(d))
        assert ("write", path) in before and ("fsync_dir", os.path.dirname(path)) in before
    assert trace[heads_at + 1 :] == [("fsync_dir", store._heads)]
    folders = [p for kind, p in trace if kind == "fsync_dir"]
    assert len(folders) == len(set(folders))  # each folder once per batch
    assert (await store.get_head(PK)).revision == 2
    assert store.write_stats() == {
        "writes": store.batch.writes,
        "write_batches": store.batch.batches,
        "head_listings": 0,
        "journal_records": 0,
    }
    await store.close()


async def test_heads_in_a_batch_are_checked_one_by_one(tmp_path):
    store = FileStore(str(tmp_path / "store"))
    h = await store.put(b"manifest")
    await store.set_head(_head(3, h))
    stale, same, newer = (
        store.set_head(_head(2, h)),
        store.set_head(_head(3, h)),
        store.set_head(_head(4, h)),
    )
    out = await asyncio.gather(stale, same, newer, return_exceptions=True)
    assert isinstance(out[0], StaleHead) and out[1] is None and out[2] is None
    assert (await store.get_head(PK)).revision == 4
    # a write whose caller gave up (a timeout) is done all the same, and the writer goes on
    fut = store.batch.put(b"abandoned")
    fut.cancel()
    assert await store.put(b"after") == digest(b"after")
    await eventually(lambda: os.path.exists(store._obj_path(digest(b"abandoned"))), timeout=30)
    await store.close()
    assert await store.put(b"after close") == digest(b"after close")  # a closed store starts again
    await store.close()


async def test_a_head_after_objects_in_one_batch_and_none_if_an_object_failed(tmp_path, monkeypatch):
    store = FileStore(str(tmp_path / "store"))
    batches = store.batch.batches
    manifest = b"manifest one"
    hashes = await store.put_then_set_head([manifest], [digest(manifest)], _head(1, digest(manifest)))
    assert hashes == [digest(manifest)]
    assert store.batch.batches == batches + 1  # the manifest and its head: one job
    assert manifest_hash_of(await store.get_head(PK)) == digest(manifest)
    real = filebatch._write_file

    def full(path, data, **kw):
        if path.startswith(store._objects):
            raise OSError(28, "No space left on device")
        real(path, data, **kw)

    monkeypatch.setattr(filebatch, "_write_file", full)
    with pytest.raises(StoreError, match="No space"):
        await store.put_then_set_head([b"manifest two"], None, _head(2, digest(b"manifest two")))
    assert (await store.get_head(PK)).revision == 1  # the head naming the lost object was not written
    await store.close()


def test_a_write_whose_loop_closed_is_written_and_the_writer_goes_on(tmp_path):
    store = FileStore(str(tmp_path / "store"))

    async def leave() -> None:
        store.batch.put(b"left behind")  # never awaited: its loop closes before it is answered

    asyncio.run(leave())
    wait_for(lambda: os.path.exists(store._obj_path(digest(b"left behind"))), timeout=30)
    assert asyncio.run(store.put(b"next")) == digest(b"next")  # another loop, the same writer


WRITER = textwrap.dedent(
    """
    import asyncio, os, sys
    from nacl.signing import SigningKey
    from sessiond.stores import FileStore
    from sessiond.stores.cid import digest
    from sessiond.stores.registry import RegistryEntry
    from sessiond.sync.heads import head_data

    async def pusher(store, k):
        key = SigningKey(bytes([k]) * 32)
        rev = (await store.get_head(b"\\xed" + bytes(key.verify_key)) or type("E", (), {"revision": 0})).revision
        while True:
            rev += 1
            page = await store.put(os.urandom(2000))
            manifest = page + os.urandom(200)
            entry = RegistryEntry.create(key, rev, head_data(digest(manifest)))
            await store.put_then_set_head([manifest], None, entry)

    async def main():
        store = FileStore(sys.argv[1])
        sys.stdout.write("go\\n"); sys.stdout.flush()
        await asyncio.gather(*(pusher(store, k) for k in range(1, 7)))

    asyncio.run(main())
    """
)


def test_a_crash_mid_batch_leaves_every_head_naming_whole_objects(tmp_path):
    """Six pushers (page, manifest naming it, head naming the manifest) on one folder store, killed
    with SIGKILL at several moments: every head then names a manifest that is there and whole, and
    that manifest the page it names."""
    root = str(tmp_path / "store")
    revs: dict[bytes, int] = {}
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, root], stdout=subprocess.PIPE)
        assert proc.stdout.readline() == b"go\n"
        store = FileStore(root)
        heads = store._heads

        def written() -> bool:
            return len([n for n in os.listdir(heads) if not n.startswith(".")]) == 6 and all(
                store._get_head_sync(pk).revision > revs.get(pk, 0) for pk in map(bytes.fromhex, _names(heads))
            )

        wait_for(written, timeout=10)  # every pusher went on since the last kill
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for pk in map(bytes.fromhex, _names(heads)):
            entry = store._get_head_sync(pk)
            entry.verify()
            assert entry.revision >= revs.get(pk, 0)  # old or new, never older
            revs[pk] = entry.revision
            manifest = store._get_sync(manifest_hash_of(entry))  # there and whole (its hash checked)
            store._get_sync(manifest[:32])


def _names(heads: str) -> list[str]:
    return [n for n in os.listdir(heads) if not n.startswith(".")]


async def test_an_object_folder_removed_since_it_was_written_is_made_again(tmp_path):
    """The writer remembers the object folders it has seen; a store whose objects/ was emptied under it (a
    lost store, which `sessiond sync` repairs by pushing everything again) had every write into a folder
    it remembered fail with "No such file or directory", for as long as the daemon ran."""
    store = FileStore(str(tmp_path / "store"))
    h = await store.put(b"an object")
    folder = os.path.dirname(store._obj_path(h))
    os.remove(store._obj_path(h))
    os.rmdir(folder)
    assert await store.put(b"an object") == h  # the same object again, into the folder that went
    assert await store.get(h) == b"an object"


def test_a_write_whose_rename_fails_leaves_no_temporary_copy(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()  # a folder where the file should go: the rename fails
    with pytest.raises(IsADirectoryError):
        fsutil.atomic_write(str(target), b"a private copy", 0o600)
    assert sorted(os.listdir(tmp_path)) == ["taken"] and os.listdir(target) == []


async def test_a_crashed_write_s_old_temporary_files_go_when_the_store_opens(tmp_path):
    """A write killed between writing its temporary file and renaming it (a crash, a power loss) left
    `.tmp-NAME-RANDOM` in objects/<2 hex>/ or heads/, and nothing ever removed it: a store in use for
    years gathered them. The store's first write after opening it starts removing those older than an
    hour (stores/file.py TEMP_FILE_AGE); newer ones may be another device's write under way in the same
    shared folder, and stay."""
    store = FileStore(str(tmp_path / "store"))
    h = await store.put(b"an object")
    await store.close()
    folder = os.path.dirname(store._obj_path(h))
    old = time.time() - 2 * 3600

    def temp(path: str, mtime: float | None) -> str:
        with open(path, "wb") as f:
            f.write(b"half")
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path

    stale = [
        temp(os.path.join(folder, f".tmp-{h.hex()}-0a0b0c"), old),
        temp(os.path.join(store._heads, ".tmp-ab-01"), old),
    ]
    live = [
        temp(os.path.join(folder, f".tmp-{h.hex()}-0d0e0f"), None),
        temp(os.path.join(store._heads, ".tmp-cd-02"), None),
    ]
    os.utime(store._obj_path(h), (old, old))  # an old object stays: only temporary files go
    again = FileStore(str(tmp_path / "store"))
    try:
        await again.put(b"another object")
        wait_for(lambda: not any(map(os.path.exists, stale)), timeout=30, what="the old temporary files removed")
        assert all(map(os.path.exists, live))
        assert await again.get(h) == b"an object"
    finally:
        await again.close()


# A daemon on a folder store whose writer thread, at its first batch, waits for the push awaiting it to be
# given up (its futures done: the stop cancelled it), or 10 s: a stop that comes mid-push, every time.
STOPPED_MID_PUSH = textwrap.dedent(
    """
    import os, sys, time
    from sessiond.stores import filebatch
    from sessiond.daemon.server import run

    real = filebatch.BatchWriter.write
    held = []

    def write(self, ops):
        if not held:
            held.append(ops)
            open(sys.argv[3], "w").close()  # the test's cue: a push waits for this batch
            deadline = time.monotonic() + 10
            while not any(op.fut.done() for op in ops) and time.monotonic() < deadline:
                time.sleep(0.01)  # (the fault: a write slow enough for the stop to come during it)
        return real(self, ops)

    filebatch.BatchWriter.write = write
    run(sys.argv[1], sys.argv[2], ready_fd=int(sys.argv[4]))
    """
)


def test_a_stop_during_a_folder_push_is_quiet_and_leaves_the_store_whole(tmp_path):
    """SIGTERM while a push waits for the folder store's writer: the daemon stops cleanly (exit 0) with
    nothing on its stderr about a future's exception never retrieved (asyncio's debug mode, which reports
    every one), and the batch the stop interrupted is written whole: every head names objects that are there."""
    from sessiond.client import Client

    home = os.path.join(str(tmp_path), "home")
    root, cue = str(tmp_path / "store"), str(tmp_path / "cue")
    r, w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", STOPPED_MID_PUSH, home, f"file://{root}", cue, str(w)],
        pass_fds=(w,),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONASYNCIODEBUG": "1"},
    )
    os.close(w)
    try:
        with os.fdopen(r, "rb") as ready:
            assert ready.read(6) == b"ready\n"
        with Client(home) as c:
            sid = c.create_session(name="s")["id"]
            c.append(sid, "user", "hello")
        wait_for(lambda: os.path.exists(cue), timeout=20, what="a push waiting for the folder's writer")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    said = err.decode()
    assert proc.returncode == 0, said[-3000:]
    assert "never retrieved" not in said, said[-3000:]
    store = FileStore(root)
    objects = [n for _, _, names in os.walk(store._objects) for n in names]
    assert objects and not [n for n in objects if n.startswith(fsutil.TEMP_PREFIX)]  # the batch written whole
    for name in objects:
        store._get_sync(bytes.fromhex(name))  # whole (its hash checked)
    for pk in map(bytes.fromhex, _names(store._heads)):
        manifest = store._get_sync(manifest_hash_of(store._get_head_sync(pk)))
        store._get_sync(manifest[:32])
