"""The folder store's batched writes: what the event loop hands over, written together by one thread.

A push writes a page, a manifest and a head, each awaited before the next; several pushes run at once.
Written one call at a time, each object and each head cost a hop to a thread and back, and each its own
fsync of its folder: under load most of a push's CPU is the kernel's, waking threads and handing the GIL
between them (profile-load.md, "System CPU and batched store writes"). Here every write asked for in
one turn of the event loop, and every one asked for while a batch is being written, goes in one job of
one writer thread:

1. each object: a temporary file, written and fsynced, renamed to its name;
2. each folder that got an object: fsynced once (and `objects/` itself when a folder was new in it);
3. only then the heads, under the heads folder's lock taken once: each checked against the one stored
   (StaleHead), written to a temporary file, fsynced, renamed; then the heads folder fsynced once, and
   a record of each head appended to the folder's change journal (stores/headjournal.py) in one write.

The callers are answered once their part of the job is durable: a put after step 2, a head after step 3,
through one call into the event loop per batch. So a head never names an object that is not durable:
its writer awaited the object's put, which finished in this batch's step 2 or an earlier batch's; and a
crash at any moment leaves each head old or new (a rename), every object whole or absent.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..storage import fsutil
from ..storage.testhooks import pause_in_thread
from . import filelayout, headjournal
from .base import MAX_OBJECT_SIZE, StaleHead, StoreError
from .cid import digest
from .registry import RegistryEntry, RegistryError

# Objects at least this large are dropped from the page cache once on disk (see FileStore._put_sync); a
# push's page or manifest of a few KB is not worth the extra call
UNCACHED_FROM = 256 * 1024
CLOSE_WAIT = 30.0  # seconds close() waits for the writes under way
IDLE_LOOK = 1.0  # seconds between an idle writer's looks at what is pending


@dataclass
class _Op:
    """One write: an object (`data`, its hash `h` if known) or a head (`entry`), and who waits for it."""

    loop: asyncio.AbstractEventLoop
    fut: asyncio.Future
    data: bytes | None = None
    h: bytes | None = None
    entry: RegistryEntry | None = None
    result: object = None
    error: BaseException | None = None
    ok: bool = False  # written (or found written) and durable
    after: list[_Op] | None = None  # a head: the objects of the same batch it is written after


class BatchWriter:
    """Writes of one folder store, gathered as described above. Paths come from the store: its folder
    `root`, `obj_path(h)`, `head_path(pk)`, `read_head(pk)` (the stored entry or None, RegistryError if
    damaged); `on_start()` is called as the writer thread starts. Folders in the store are made as
    stores/filelayout.py says: never the store's own."""

    def __init__(
        self,
        root: str,
        obj_path: Callable[[bytes], str],
        head_path: Callable[[bytes], str],
        read_head: Callable[[bytes], RegistryEntry | None],
        on_start: Callable[[], None] = lambda: None,
    ):
        self._root, self._objects, self._heads = root, os.path.join(root, "objects"), os.path.join(root, "heads")
        self._on_start = on_start  # called when the writer thread starts (the store's first write)
        self._obj_path, self._head_path, self._read_head = obj_path, head_path, read_head
        self._cond = threading.Condition()
        self._pending: list[_Op] = []
        self._kicked = False  # a wake-up of the writer is scheduled on the loop, or the writer is busy
        self._thread: threading.Thread | None = None
        self._closing = False
        self._dirs: set[str] = set()  # object folders known to exist (and to be durable in objects/)
        self.batches = 0  # jobs written (GET /v1/status: the store's write_batches)
        self.writes = 0  # objects and heads written in them (the store's writes)

    # ---------------------------------------------------------------- the event loop's side
    def put(self, data: bytes, h: bytes | None = None) -> asyncio.Future:
        """The future of storing one object (its hash)."""
        return self._add([_Op(asyncio.get_running_loop(), _future(), data=data, h=h)])[0]

    def set_head(self, entry: RegistryEntry) -> asyncio.Future:
        """The future of publishing one head (None, or StaleHead)."""
        return self._add([_Op(asyncio.get_running_loop(), _future(), entry=entry)])[0]

    def put_then_set_head(self, items: list[tuple[bytes, bytes | None]], entry: RegistryEntry) -> list[asyncio.Future]:
        """Store objects (data, hash or None) and then publish a head that may name them, in one batch:
        the head is written once they are durable, and not at all if one of them failed (its error is
        the head's). The futures of the objects, then the head's."""
        loop = asyncio.get_running_loop()
        objects = [_Op(loop, _future(), data=d, h=h) for d, h in items]
        return self._add([*objects, _Op(loop, _future(), entry=entry, after=objects)])

    def _add(self, ops: list[_Op]) -> list[asyncio.Future]:
        with self._cond:
            if self._closing:
                raise StoreError("the folder store is closed")
            self._pending.extend(ops)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sessiond-store-batch", daemon=True)
                self._thread.start()
                self._on_start()
            kick = not self._kicked
            self._kicked = True
        if kick:  # after the rest of this turn: what it writes joins the same batch
            ops[0].loop.call_soon(self._wake)
        return [op.fut for op in ops]

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def close(self) -> None:
        """Write what is pending, then stop the writer (blocking: from the loop, through a thread)."""
        with self._cond:
            self._closing = True
            thread, self._thread = self._thread, None
            self._cond.notify()
        if thread is not None:
            thread.join(CLOSE_WAIT)  # a folder that hangs (a network share) must not hang the daemon's stop
        with self._cond:
            self._closing = False
            self._kicked = False

    # ---------------------------------------------------------------- the writer thread
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._kicked = False  # idle: the next write wakes it
                    # (and a look each second: a wake-up scheduled on a loop that then stopped never comes)
                    self._cond.wait(IDLE_LOOK)
                if not self._pending:
                    return
                ops, self._pending = self._pending, []
                self._kicked = True  # busy: writes asked for meanwhile wait for the next batch, no wake-up
            try:
                self.write(ops)
            except BaseException as exc:  # nothing may be left unanswered
                for op in ops:
                    if not op.ok and op.error is None:
                        op.error = exc
            self.batches += 1
            self.writes += len(ops)
            by_loop: dict[asyncio.AbstractEventLoop, list[_Op]] = {}
            for op in ops:
                by_loop.setdefault(op.loop, []).append(op)
            for loop, mine in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle, mine)
                except RuntimeError:
                    pass  # that loop is closed: nobody waits any more

    def write(self, ops: list[_Op]) -> None:
        """Write a batch (in this thread, blocking), filling in each op's result or error."""
        objects = [op for op in ops if op.entry is None]
        heads = [op for op in ops if op.entry is not None]
        if objects:
            self._write_objects(objects)
        if heads:
            self._write_heads(heads)

    def _write_objects(self, ops: list[_Op]) -> None:
        dirty: dict[str, list[_Op]] = {}  # folder -> the ops whose rename in it is not yet durable
        new_dirs = False
        for op in ops:
            data = op.data
            assert data is not None
            if len(data) > MAX_OBJECT_SIZE:
                op.error = StoreError(f"object of {len(data)} bytes exceeds the 1 MiB limit")
                continue
            h = op.h or digest(data)
            path = self._obj_path(h)
            folder = os.path.dirname(path)
            try:
                if folder not in self._dirs:
                    if not os.path.isdir(folder):
                        filelayout.make_folder(self._root, folder, durable=False)
                        new_dirs = True
                    self._dirs.add(folder)
                if not os.path.exists(path):
                    try:
                        _write_file(path, data, uncached=len(data) >= UNCACHED_FROM)
                    except FileNotFoundError:  # the folder went since it was seen (the store was emptied): again
                        self._dirs.discard(folder)
                        filelayout.make_folder(self._root, folder, durable=False)
                        new_dirs = True
                        _write_file(path, data, uncached=len(data) >= UNCACHED_FROM)
                        self._dirs.add(folder)
                    dirty.setdefault(folder, []).append(op)
                # else: stored before (by an earlier batch, durable then, or by a long push's writer
                # threads, which answer only once durable)
            except OSError as exc:
                op.error = self._failed(f"cannot write object {h.hex()}", self._objects, exc)
                continue
            op.result, op.ok = h, True
        if new_dirs:
            dirty.setdefault(self._objects, [])  # a new folder's entry in objects/ must be durable too
        for folder, waiting in dirty.items():
            try:
                fsutil.fsync_dir(folder)
            except OSError as exc:
                failed = ops if folder == self._objects else waiting  # a new folder may be lost: all of it
                if folder == self._objects:
                    self._dirs.clear()
                for op in failed:
                    if op.ok:
                        op.ok, op.error = False, self._failed(f"cannot make {folder} durable", folder, exc)

    def _failed(self, what: str, where: str, exc: OSError) -> StoreError:
        return filelayout.failure(what, self._root, where, exc)

    def _write_heads(self, ops: list[_Op]) -> None:
        lock = os.path.join(self._heads, ".lock")
        try:
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
            except FileNotFoundError:  # heads/ went (the store emptied by hand): made again, as its objects'
                # folders are, if the folder is still the store (filelayout.py; not a share's empty mount point)
                filelayout.make_folder(self._root, self._heads)
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            for op in ops:
                op.error = self._failed(f"cannot lock the heads of {self._heads}", self._heads, exc)
            return
        written: list[_Op] = []
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            for op in ops:
                entry = op.entry
                assert entry is not None
                failed = next((o for o in op.after or () if not o.ok), None)
                if failed is not None:  # an object it may name is not stored: not this head either
                    op.error = failed.error or StoreError("an object of this head was not stored")
                    continue
                try:
                    entry.verify()
                    try:
                        current = self._read_head(entry.pk)
                    except RegistryError:
                        current = None  # a damaged head may be replaced by a valid one
                    if current is not None and entry.revision <= current.revision:
                        if current != entry:
                            op.error = StaleHead(
                                f"the store holds revision {current.revision}; revision {entry.revision} is not newer"
                            )
                        else:
                            op.ok = True  # published before (a retried push)
                        continue
                    _write_file(self._head_path(entry.pk), entry.to_bytes())
                    op.ok = True
                    written.append(op)
                except RegistryError as exc:
                    op.error = exc
                except OSError as exc:
                    op.error = self._failed(f"cannot write a head in {self._heads}", self._heads, exc)
            if written:
                try:
                    fsutil.fsync_dir(self._heads)
                except OSError as exc:
                    for op in written:
                        op.ok, op.error = False, self._failed(f"cannot make {self._heads} durable", self._heads, exc)
                    written = []
            try:  # once durable, the followers' hint (stores/headjournal.py): one append for the batch
                headjournal.append(self._heads, [(op.entry.pk, op.entry.revision) for op in written if op.entry])
            except OSError:
                pass  # only a hint: followers find these heads by their next full listing
        finally:
            os.close(fd)


def _write_file(path: str, data: bytes, *, uncached: bool = False) -> None:
    """One file written atomically and fsynced; its folder not fsynced here (the batch does it once per
    folder, after all its files)."""
    pause_in_thread("store.write")  # (tests: a folder that hangs, a network share gone)
    fsutil.atomic_write(path, data, uncached=uncached, sync_dir=False)


def _future() -> asyncio.Future:
    return asyncio.get_running_loop().create_future()


def _settle(ops: list[_Op]) -> None:
    for op in ops:
        if op.fut.done():
            continue  # cancelled (a timeout): the write happened all the same, and is harmless
        if not op.ok:
            op.fut.set_exception(op.error or StoreError("the write was not done"))
        else:
            op.fut.set_result(op.result)
