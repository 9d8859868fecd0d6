"""The folder store: objects and heads as files in a folder (which may be a synced or network folder)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import os
import threading
import time
from collections.abc import Callable, Sequence

from ..storage import fsutil
from ..storage.fsutil import atomic_write, read_small
from . import filelayout
from .base import MAX_OBJECT_SIZE, Freed, ObjectMissing, Oversized, Store, StoreError, check_object
from .cid import digest, digest_parts
from .filebatch import CLOSE_WAIT, BatchWriter
from .fileread import Reader
from .headjournal import HeadWatch
from .registry import RegistryEntry, RegistryError
from .waits import gathered

# Several files written and fsynced at once: the disk sorts the flushes out better than one after
# another (measured here: 370 objects of 500 KB in 0.34 s with 8 threads, 0.61 s with one).
WRITER_THREADS = 8
# head_versions lists the heads folder again only when it changed (its mtime), when it had changed this
# shortly before the last listing, or this long after the last listing (a safety net)
RACY_NS = 2_000_000_000
RELIST_EVERY = 5.0
# put_many hands at most this many objects (and bytes) to the batched writer (stores/filebatch.py); a
# larger batch (a first push, a compaction) goes to the WRITER_THREADS, which write side by side
BATCH_OBJECTS = 8
BATCH_BYTES = 1 << 20
# A write killed between its temporary file and the rename (storage/fsutil.py atomic_write: .tmp-NAME-RANDOM
# beside NAME) leaves the temporary file; the first write after opening the store starts removing those
# last changed this long ago (FileStore._start_sweep). The folder may be shared by devices writing into it
# at this moment: a live write holds its temporary file for well under a second (an object is at most
# 1 MiB), so one an hour old is no live writer's, with room for the clocks of the devices sharing the
# folder to disagree by minutes. (A write stalled longer on a hung share finds its file gone at the rename:
# it fails, as any write error, and is tried again.)
TEMP_FILE_AGE = 3600.0

# stores that their first use could not make tell they are made one at a time (_make_sync)
_TELLING = threading.Lock()


class FileStore(Store):
    """A store in a folder: objects/<2 hex>/<64 hex>, heads/<66 hex>. The folder may be shared
    between machines (a synced or network folder); each device writes only its own heads."""

    def __init__(self, root: str, *, create: bool = True, missing_ok: bool = False):
        """`create`: make the store if it is not there (its first use: stores/filelayout.py); with
        `missing_ok` too, a store that cannot be made now (a file in its path, a disk full or read-only)
        is made at the first call that can: each call until then fails as the making does (OSError
        otherwise). Else a store must be there (StoreError), unless `missing_ok`: a store opened as it
        is, which fails each call as unreachable while its folder is away (a share not mounted) and
        serves again once it is back."""
        self.root = os.path.abspath(root)
        self.url = "file://" + self.root
        self._objects = os.path.join(self.root, "objects")
        self._heads = os.path.join(self.root, "heads")
        self._unmade = False  # its first use could not make it: made at the next call that can (_made)
        self.on_made: Callable[[], None] | None = None  # told (on a store thread) once such a store is made
        if create:
            try:
                filelayout.create(self.root)
            except OSError:
                if not missing_ok:
                    raise
                self._unmade = True
        elif not missing_ok and not filelayout.is_store(self.root):
            raise StoreError(f"there is no store at {self.root}")
        self._writers: concurrent.futures.ThreadPoolExecutor | None = None  # started on the first write
        self._writers_lock = threading.Lock()
        self._listing: tuple[tuple, float, dict[bytes, object]] | None = None  # heads folder stat, when, heads
        self._watch = HeadWatch(self._heads, self._list_heads, lambda: RELIST_EVERY)  # head_changes
        # the event loop's writes (a push's page, manifest and head; many pushes' at once): one thread
        self.batch = BatchWriter(self.root, self._obj_path, self._head_path, self._get_head_sync, self._start_sweep)
        # its reads (a head, an object, whether objects are there, a look at the heads): one thread (fileread.py)
        self._reader = Reader()
        # the leftovers of crashed writes: removed from the first write on (see TEMP_FILE_AGE)
        self._sweep: threading.Thread | None = None
        self._sweep_lock = threading.Lock()
        self._closing = threading.Event()

    def _start_sweep(self) -> None:
        """Start, once, the removal of old temporary files, on a thread of its own: listing every
        objects/<2 hex>/ of a large store (on a network share) must hold up neither the event loop nor
        the first write. Named as the writer threads are (`sessiond-store_`): one of the store's
        threads, which start with its first write and end with close()."""
        with self._sweep_lock:
            if self._sweep is not None:
                return
            self._sweep = threading.Thread(
                target=self._remove_old_temp_files,
                args=(time.time() - TEMP_FILE_AGE,),
                daemon=True,
                name="sessiond-store_sweep",
            )
            self._sweep.start()

    def _remove_old_temp_files(self, before: float) -> None:
        """Remove the temporary files of crashed writes last changed before `before` (TEMP_FILE_AGE); and
        write the marker into a store an older version made (filelayout.mark_old_store)."""
        try:
            filelayout.mark_old_store(self.root)
            with os.scandir(self._objects) as it:
                folders = [e.path for e in it if len(e.name) == 2 and e.is_dir(follow_symlinks=False)]
            for folder in (self._heads, *folders):
                if self._closing.is_set():
                    return
                fsutil.remove_leftover_temp_files(folder, before)
        except OSError:
            pass  # only housekeeping: the next open tries again

    def _make_sync(self) -> None:
        """Make the store its first use could not make (create=True), now; its failure if it still cannot.
        Told one store at a time (_TELLING): a mirror's stores made at once by their threads tell in turn,
        each after it is made, so the home's note of those not made yet is written last from the last look."""
        if not self._unmade:
            return
        try:
            filelayout.create(self.root)
        except OSError as exc:
            raise filelayout.make_failure(self.root, exc) from None
        self._unmade = False
        if self.on_made is not None:
            with _TELLING:
                self.on_made()

    @property
    def unmade(self) -> bool:
        """Whether its first use could not make it, and no call has since (create=True with missing_ok)."""
        return self._unmade

    async def _made(self) -> None:
        """Before a call: the store made, if its first use could not make it (on the reader's thread)."""
        if self._unmade:
            await self._reader.run(self._make_sync)

    async def _made_or_none(self) -> bool:
        """_made for a look at the heads, which says None of a folder gone: False if it cannot be made yet."""
        try:
            await self._made()
        except StoreError:
            return False
        return True

    async def failing_now(self) -> StoreError | None:
        """Store.failing_now: the folder missing, empty, or not made yet (made now if it can be)."""

        def look() -> StoreError | None:
            try:
                self._make_sync()
            except StoreError as exc:
                return exc
            return filelayout.away(self.root)

        return await self._reader.run(look)

    def _failure(self, what: str, where: str, exc: OSError) -> StoreError:
        return filelayout.failure(what, self.root, where, exc)

    def _obj_path(self, h: bytes) -> str:
        hx = h.hex()
        return os.path.join(self._objects, hx[:2], hx)

    def put_in_background(self, data: bytes | list[bytes], h: bytes | None = None) -> concurrent.futures.Future:
        with self._writers_lock:  # called from a push's worker threads
            if self._writers is None:
                self._writers = concurrent.futures.ThreadPoolExecutor(
                    WRITER_THREADS, thread_name_prefix="sessiond-store"
                )
                self._start_sweep()
            return self._writers.submit(self._put_sync, data, h)

    async def close(self) -> None:
        """Stop the writer threads once the writes handed to them are done (each is atomic), and the
        reader once what it was asked is read. A store used again after close() starts them again, as
        the network stores open a new session."""
        with self._writers_lock:
            writers, self._writers = self._writers, None
        if writers is not None:
            await asyncio.to_thread(writers.shutdown, True)
        await asyncio.to_thread(self.batch.close)
        await asyncio.to_thread(self._reader.close)
        self._closing.set()  # a sweep stops at its next folder
        if self._sweep is not None:
            await asyncio.to_thread(self._sweep.join, CLOSE_WAIT)  # a hung network share must not hang a stop

    def _put_sync(self, data: bytes | list[bytes], h: bytes | None = None) -> bytes:
        self._make_sync()  # (a long push's writer threads: no event loop here)
        size = len(data) if isinstance(data, bytes) else sum(map(len, data))
        if size > MAX_OBJECT_SIZE:
            raise StoreError(f"object of {size} bytes exceeds the 1 MiB limit")
        h = h or (digest(data) if isinstance(data, bytes) else digest_parts(data))
        path = self._obj_path(h)
        if os.path.exists(path):
            return h
        folder = os.path.dirname(path)
        try:
            if not os.path.isdir(folder):  # (its entry made durable before an object in it counts as stored)
                filelayout.make_folder(self.root, folder)
            # Off the page cache once on disk: the objects are for other devices and backups, and this
            # daemon reads them back only to verify. A first push of a 200 MB session would otherwise push
            # as much of the database out of the cache, and take fresh memory for every page it writes
            # (measured: a 185 MB push 0.97 s without, 0.77 s with, after 1 GB of other writes).
            atomic_write(path, data, 0o600, uncached=True)
        except OSError as exc:
            raise self._failure(f"cannot write object {h.hex()}", self._objects, exc) from None
        return h

    def _get_sync(self, h: bytes, limit: int = MAX_OBJECT_SIZE, what: str = "an object") -> bytes:
        """Object `h`, refused unread (Oversized) if its file is larger than `limit`: no object this store
        takes is past MAX_OBJECT_SIZE, and anyone who can write to the folder can put a file of any size."""
        try:
            with open(self._obj_path(h), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > limit:
                    raise Oversized(h, size, limit, what)
                data = f.read(limit + 1)  # (a file growing meanwhile: still no more than this)
                if len(data) > limit:
                    raise Oversized(h, None, limit, what)
        except FileNotFoundError as exc:
            if os.path.isdir(self._objects):
                raise ObjectMissing(h) from None
            raise self._failure(f"cannot read object {h.hex()}", self._objects, exc) from None  # the store is gone
        except OSError as exc:
            raise self._failure(f"cannot read object {h.hex()}", self._objects, exc) from None
        return check_object(h, data)

    def write_stats(self) -> dict[str, int]:
        return {
            "writes": self.batch.writes,
            "write_batches": self.batch.batches,
            "head_listings": self._watch.listings,
            "journal_records": self._watch.records,
        }

    async def put(self, data: bytes) -> bytes:
        await self._made()
        return await self.batch.put(data)

    async def put_many(
        self, items: list[bytes], hashes: Sequence[bytes | None] | None = None, *, timeout: float | None = None
    ) -> list[bytes]:
        """Store.put_many: a few small objects (a push's page) through the batched writer, with the other
        writes of this turn of the loop; more on the writer threads (see WRITER_THREADS), all at once.
        `hashes` trusted, not recomputed; `timeout` bounds the batch."""
        await self._made()
        hashes = hashes or [None] * len(items)
        if self._batched(items):
            return await gathered([self.batch.put(d, h) for d, h in zip(items, hashes)], timeout)
        background = [asyncio.wrap_future(self.put_in_background(d, h)) for d, h in zip(items, hashes)]
        return await gathered(background, timeout)

    async def put_then_set_head(
        self,
        items: list[bytes],
        hashes: Sequence[bytes | None] | None,
        entry: RegistryEntry,
        *,
        timeout: float | None = None,
    ) -> list[bytes]:
        """Store.put_then_set_head in one batch of the writer: the head written once the objects are
        durable (a push's manifest and head: one hop to the writer, not two). `timeout` bounds the batch."""
        await self._made()
        if not self._batched(items):
            return await super().put_then_set_head(items, hashes, entry, timeout=timeout)
        futs = self.batch.put_then_set_head(list(zip(items, hashes or [None] * len(items))), entry)
        return (await gathered(futs, timeout))[:-1]

    @staticmethod
    def _batched(items: list[bytes]) -> bool:
        return len(items) <= BATCH_OBJECTS and sum(len(d) for d in items) <= BATCH_BYTES

    async def get(self, h: bytes) -> bytes:
        await self._made()
        return await self._reader.run(self._get_sync, h)

    async def get_capped(self, h: bytes, limit: int, what: str = "an object") -> bytes:
        await self._made()
        return await self._reader.run(self._get_sync, h, min(limit, MAX_OBJECT_SIZE), what)

    async def get_many(self, hashes: list[bytes]) -> list[bytes]:
        await self._made()
        return await asyncio.to_thread(lambda: [self._get_sync(h) for h in hashes])

    def _has_sync(self, path: str) -> bool:
        return os.path.exists(path) or self._objects_there("cannot look for an object")

    def _objects_there(self, what: str) -> bool:
        """False if objects/ is there (an object not in it is not held); the store failing if it is not
        (a folder that went says nothing of what the store holds)."""
        if os.path.isdir(self._objects):
            return False
        gone = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self._objects)
        raise self._failure(what, self._objects, gone)

    async def has(self, h: bytes) -> bool:
        await self._made()
        return await self._reader.run(self._has_sync, self._obj_path(h))

    async def first_missing(self, hashes: Sequence[bytes], *, timeout: float | None = None) -> bytes | None:
        """Store.first_missing in one hop to a thread for them all (a log's check before a share asked
        once per object, one after the other). `timeout` bounds the whole."""
        await self._made()
        paths = [(h, self._obj_path(h)) for h in hashes]

        def first() -> bytes | None:
            missing = next((h for h, p in paths if not os.path.exists(p)), None)
            if missing is not None:
                self._objects_there("cannot look for objects")
            return missing

        return await asyncio.wait_for(self._reader.run(first), timeout)

    def _free_sync(self, hashes: list[bytes], dry_run: bool) -> Freed:
        out = Freed("deleted")
        for h in dict.fromkeys(hashes):
            path = self._obj_path(h)
            try:
                size = os.stat(path).st_size
                if not dry_run:
                    os.unlink(path)
            except FileNotFoundError:
                self._objects_there(f"cannot delete object {h.hex()}")  # (not: a store that went frees nothing)
                out.gone.append(h)  # not held (freed before, or never here)
                continue
            except OSError as exc:
                raise self._failure(f"cannot delete object {h.hex()}", self._objects, exc) from None
            out.objects += 1
            out.nbytes += size
            out.gone.append(h)
        return out

    async def free(self, hashes: list[bytes], *, dry_run: bool = False) -> Freed:
        await self._made()
        return await asyncio.to_thread(self._free_sync, hashes, dry_run)

    def _head_path(self, pk: bytes) -> str:
        return os.path.join(self._heads, pk.hex())

    def _get_head_sync(self, pk: bytes) -> RegistryEntry | None:
        try:
            raw = read_small(self._head_path(pk))  # (4 system calls: Python's open().read() makes 7)
        except FileNotFoundError as exc:
            if os.path.isdir(self._heads):
                return None  # no head of this key
            raise self._failure("cannot read a head", self._heads, exc) from None  # the store is gone
        except OSError as exc:
            raise self._failure("cannot read a head", self._heads, exc) from None
        entry = RegistryEntry.from_bytes(raw)
        if entry.pk != pk:
            raise RegistryError("the head stored under this key is signed by another key")
        return entry

    async def get_head(self, pk: bytes) -> RegistryEntry | None:
        await self._made()
        return await self._reader.run(self._get_head_sync, pk)

    def _head_versions_sync(self) -> dict[bytes, object]:
        # The last listing again while the heads folder itself is unchanged: every head is written by a
        # rename into it, which changes the folder's mtime (a follower of 10,000 heads read them all 4x a
        # second). A listing is kept only if the folder had not changed for RACY_NS when it began: a
        # change in the same timestamp tick as the one before it (a coarse or skewed clock, a network
        # folder) would not show in the mtime. And listed again after RELIST_EVERY in any case.
        st = os.stat(self._heads)
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        last = self._listing
        if last is not None and last[0] == key and time.monotonic() - last[1] < RELIST_EVERY:
            return last[2]
        listed_at = time.monotonic()
        settled = time.time_ns() - st.st_mtime_ns >= RACY_NS
        out = self._list_heads()
        self._listing = (key, listed_at, out) if settled else None  # the folder as it was before the listing
        return out

    def _list_heads(self) -> dict[bytes, object]:
        """Every head in the folder, as its file's (inode, mtime, size): a head is replaced by a rename."""
        out: dict[bytes, object] = {}
        with os.scandir(self._heads) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue  # a head being written, the journal, the lock
                try:
                    pk = bytes.fromhex(entry.name)
                    st = entry.stat()
                except (ValueError, FileNotFoundError):
                    continue
                out[pk] = (st.st_ino, st.st_mtime_ns, st.st_size)
        return out

    async def head_changes(self, since: object | None) -> tuple[object, set[bytes] | None] | None:
        """Store.head_changes from the heads folder's change journal (stores/headjournal.py): the
        journal's new records and a stat of each head they name, in time proportional to the change;
        a full listing when the journal cannot say, and every RELIST_EVERY. None if the folder is gone."""
        if not await self._made_or_none():
            return None
        try:
            await self._reader.run(self._watch.poll)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._failure("cannot look at the heads", self._heads, exc) from None
        return self._watch.changes_since(since)

    async def head_versions(self) -> dict[bytes, object] | None:
        """As Store.head_versions; the same dict object (not to be changed) while nothing changed."""
        if not await self._made_or_none():
            return None
        try:
            return await self._reader.run(self._head_versions_sync)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._failure("cannot look at the heads", self._heads, exc) from None

    async def set_head(self, entry: RegistryEntry) -> None:
        await self._made()
        await self.batch.set_head(entry)
