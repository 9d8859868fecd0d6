"""This device's log of one session, written as encrypted objects to a store (docs/FORMATS.md,
"Snapshot layout"): LogWriter seals and stores pages, nodes and manifests, and folds the levels; a
long run is written by worker threads (_RunJob).

The log is a sequence of operations numbered 1..n. It is stored as *pages* (runs of operations) and
*nodes* (lists of entries), all encrypted objects, and a *head manifest* that lists, level by level,
the entries that cover the log:

    levels[L] is a list of at most F-1 entries once a push completes; entries of level L+1 cover
    earlier operations than entries of level L. A push appends a page of the new operations to
    level 0; whenever a level holds F entries, its oldest F become one entry of the level above:
    one merged page if they are pages that fit in PAGE_MAX together, otherwise a node listing them.

So a push writes the new operations once, plus a manifest of O(F log n) entries, and every operation
is rewritten O(log n) times over its life: the cost of an append stays flat as the session grows.
The plaintexts are sync/pagecut.py's (pages), sync/pages.py's and sync/manifest.py's; the threads are sync/workers.py's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
from bisect import bisect_right
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass

from ..storage.model import LogRun
from ..stores import Store
from ..stores.cid import BlobId, digest_parts
from ..stores.waits import gathered
from .crypto import EncryptedCID, manifest_key, object_key, seal, seal_chunks
from .pagecut import cut as cut_run
from .pagecut import encode_page_chunks, encode_pages, measure, page_ends, page_limit
from .pages import PAGE_MAX, Entry, encode_node, encode_parts
from .workers import Workers, shared

FANOUT = 16
# Read, encoded and sealed at a time by one worker of a long push. Small enough that one worker's
# read overlaps the other's encoding, sealing and writing, and that little is left after the last
# read (with 8 MB, 100,000 short messages were two chunks read side by side, then both encoded and
# sealed, then all written); large enough that a chunk's own statements and its turn cost next to
# nothing (2 MB against 8 MB: no more process CPU, measured alternating on the shared machine,
# bench/results/profile-push.md).
STREAM_BYTES = 2 << 20
# A long push: worker threads (Workers.push) that each read, encode and seal a chunk, and hand the
# objects to the store (Store.put_in_background: a file store writes and fsyncs several at once on its
# own threads).
_WRITES_OUT = 32  # objects handed to the store and not yet written, at most (32 MiB)
_FIRST_CHUNK = 1024  # operations: a run no longer is read at once; a long one begins with a chunk of it
# The last chunks of a long run are halves of what is left, down to 1/_LAST_SPLIT of a chunk: with whole
# chunks to the end, one worker ended 1-5 ms before the other (a chat-sized first push of 100,000
# messages, 2 ms at the median), its core idle meanwhile (bench/results/profile-push.md)
_LAST_SPLIT = 8
# A run this small is encoded and sealed on the event loop (LogWriter.write_pages): ~150 us at most,
# less than the loop's side of a hop to a thread and back
INLINE_OPS = 16
INLINE_BYTES = 16 << 10


def is_long(first: int, last: int) -> bool:
    """Whether LogWriter.write_run writes operations first..last by worker threads, in chunks (a long
    run: its pages are full ones, so folding them upward writes nodes and reads nothing)."""
    return last - first >= _FIRST_CHUNK


@dataclass
class Written:
    """What a push put in the store (for statistics and the benchmark)."""

    objects: int = 0
    bytes: int = 0


class LogWriter:
    """Builds pages, nodes and manifests for one (session, device) log."""

    def __init__(
        self,
        sid: str,
        device: str,
        session_key: bytes,
        store: Store,
        timeout: float = 30.0,
        *,
        workers: Workers | None = None,
    ):
        self.sid = sid
        self.device = device
        self.key = session_key
        self.store = store
        self.timeout = timeout
        self.written = Written()
        self.unreferenced: list[bytes] = []  # what the last compact() merged away
        # Told the hashes of the objects it is about to put, before their upload (Pusher: noted as gc
        # candidates until a recorded revision names them, so that a push killed in between leaves gc what
        # its retry does not put again); `noted`: the hashes told since the caller last cleared it
        self.before_put: Callable[[list[bytes]], Awaitable[None]] | None = None
        self.noted: list[bytes] = []
        # told (on the event loop) the last seq of each chunk of a long run written (progress)
        self.on_progress: Callable[[int], None] | None = None
        self._workers = workers  # None: workers.shared(), taken when first needed

    @property
    def workers(self) -> Workers:
        if self._workers is None:
            self._workers = shared()
        return self._workers

    async def note(self, hashes: list[bytes]) -> None:
        """Tell `before_put` of objects about to be put (each caller of put and put_in_background does)."""
        if self.before_put is not None and hashes:
            await self.before_put(hashes)
            self.noted += hashes

    async def put(self, ciphertexts: list[bytes], hashes: list[bytes] | None = None) -> None:
        """Store objects; `hashes` are their BLAKE3 hashes when sealing has just computed them."""
        if not ciphertexts:
            return
        await self.store.put_many(ciphertexts, hashes, timeout=self.timeout)
        self.written.objects += len(ciphertexts)
        self.written.bytes += sum(len(c) for c in ciphertexts)

    def _seal(self, plaintext: bytes) -> tuple[bytes, EncryptedCID]:
        plain = BlobId.of(plaintext)
        return seal(plaintext, object_key(self.key, plain.hash), plain=plain)

    def cut(self, run: LogRun) -> tuple[list[int], list]:
        """Where the pages of a run begin (pagecut.cut, for this log)."""
        return cut_run(run, self.sid, self.device)

    def pages(
        self, run: LogRun, cut: tuple[list[int], list] | None = None, count: int | None = None
    ) -> list[tuple[bytes, int, int]]:
        """A run of operations as page plaintexts [(plaintext, first seq, last seq)] (pagecut.encode_pages,
        for this log)."""
        return encode_pages(run, self.sid, self.device, cut, count)

    def _seal_page(self, plain: bytes) -> tuple[list[tuple[bytes, EncryptedCID]], EncryptedCID, bool]:
        """Seal one page: (the objects to store, the reference its entry holds, whether it is in parts).
        A page is larger than PAGE_MAX only when one operation is (a message of megabytes): it is cut
        into parts of PAGE_MAX bytes, each its own object, listed in order by a parts object, so that
        every object stays under the 1 MiB limit."""
        if len(plain) <= PAGE_MAX:
            ct, ref = self._seal(plain)
            return [(ct, ref)], ref, False
        view = memoryview(plain)
        sealed = [self._seal(bytes(view[i : i + PAGE_MAX])) for i in range(0, len(plain), PAGE_MAX)]
        index = self._seal(encode_parts([ref for _, ref in sealed], self.sid, self.device))
        return sealed + [index], index[1], True

    def page_chunks(self, run: LogRun, cut: tuple[list[int], list], count: int) -> list[tuple[list[bytes], int, int]]:
        """pages(), each plaintext as the pieces it is sealed in (pagecut.encode_page_chunks)."""
        return encode_page_chunks(run, self.sid, self.device, cut, count)

    def _seal_chunks(
        self, chunks: list[bytes]
    ) -> tuple[list[tuple[bytes | list[bytes], EncryptedCID]], EncryptedCID, bool]:
        """_seal_page of a page given as its pieces (page_chunks'). A page of PAGE_MAX bytes or less is one
        object, its ciphertext left as its sealed chunks, for the store to write as they are
        (Store.put_in_background) without joining them: a copy of the page fewer, with the GIL held."""
        size = sum(map(len, chunks))
        if size > PAGE_MAX:  # one operation larger than a page: in parts (rare)
            objects, ref, parts = self._seal_page(b"".join(chunks))
            return list(objects), ref, parts
        plain = BlobId(digest_parts(chunks), size)
        sealed, ref = seal_chunks(chunks, object_key(self.key, plain.hash), plain)
        return [(sealed, ref)], ref, False

    def _pages_sealed(self, run: LogRun) -> tuple[list[tuple[bytes, int, int]], list]:
        """A run's pages, encoded and sealed (in whichever thread calls it)."""
        pages = self.pages(run)
        return pages, [self._seal_page(p[0]) for p in pages]

    async def write_pages(self, run: LogRun) -> list[Entry]:
        """Encode, seal and store a run of operations (all in memory) as pages.

        A push that runs while appends arrive would hold them up for as long as each of its steps on the
        event loop takes, so the loop does only what is quicker than a hop to another thread (a few
        small operations: ~10 us a message); a larger run is encoded and sealed in one hop to a sealing
        thread, and one of several pages (only a run of large messages makes several) on both sealing
        threads at once, page by page (libsodium and BLAKE3 release the GIL)."""
        if len(run) <= INLINE_OPS and len(run.blob) <= INLINE_BYTES:
            pages, sealed = self._pages_sealed(run)
        elif len(run.blob) <= PAGE_MAX:
            loop = asyncio.get_running_loop()
            pages, sealed = await loop.run_in_executor(self.workers.seal, self._pages_sealed, run)
        else:
            loop = asyncio.get_running_loop()
            pages = await asyncio.to_thread(self.pages, run)
            sealers = self.workers.seal
            sealed = await asyncio.gather(*(loop.run_in_executor(sealers, self._seal_page, p[0]) for p in pages))
        objects = [o for objs, _, _ in sealed for o in objs]
        await self.note([ref.hash for _, ref in objects])
        await self.put([ct for ct, _ in objects], [ref.hash for _, ref in objects])
        return [
            Entry(first, last, len(plain), False, ref, parts)
            for (plain, first, last), (_, ref, parts) in zip(pages, sealed)
        ]

    async def write_run(
        self,
        load: Callable[[int, int], Awaitable[LogRun]],
        open_loader: Callable[[], ContextManager[Callable[[int, int], LogRun]]],
        first: int,
        last: int,
    ) -> tuple[list[Entry], int]:
        """Store operations first..last as pages. Returns (entries, highest Lamport value).

        A short run is read at once with `load(a, b)` (async; Database.log_run for seqs a..b). A long
        one is read a chunk of about STREAM_BYTES at a time, so that memory stays bounded whatever its
        size, by worker threads that each take the next chunk and read, encode, seal and write it: the
        heavy work (SQLite, libsodium, BLAKE3, file writes) releases the GIL, so the workers run side
        by side, and nothing is handed to the event loop per page. `open_loader()` gives a worker its
        own reader: a context manager yielding a plain function load(a, b) -> LogRun."""
        if not is_long(first, last):
            run = await load(first, last)
            return await self.write_pages(run), max(run.lams, default=0)
        job = _RunJob(self, first, last, open_loader, asyncio.get_running_loop())
        pool = self.workers
        with pool.gc_paused():
            # asyncio.wait, not gather: cancelling this push must not drop the workers while they run
            workers = [asyncio.wrap_future(pool.push.submit(job.work)) for _ in range(pool.push_threads)]
            try:
                await asyncio.wait(workers)
                await job.drain()
            except BaseException:
                job.stop()  # the workers stop at their next step; let them and their writes wind down
                await asyncio.wait(workers)
                await job.drain(cancel=True)
                raise
            return job.result()

    async def compact(
        self, levels: list[list[Entry]], load_records: Callable[[int, int], Awaitable[LogRun]]
    ) -> list[list[Entry]]:
        """Fold full levels upward (see the module doc). `load_records(first, last)` gives this log's
        operations first..last (Database.log_run). The pages merged away, which the new levels no longer
        reference, are listed in `self.unreferenced` (a group folded into a node stays referenced by it)."""
        self.unreferenced = []
        levels = [list(lv) for lv in levels]
        nodes: list[tuple[bytes, bytes]] = []  # sealed as they are made, written together at the end
        lvl = 0
        while lvl < len(levels):
            while len(levels[lvl]) >= FANOUT:
                group, levels[lvl] = levels[lvl][:FANOUT], levels[lvl][FANOUT:]
                size = sum(e.size for e in group)
                if not any(e.node or e.parts for e in group) and size <= PAGE_MAX:
                    merged = await self.write_pages(await load_records(group[0].first, group[-1].last))
                    new = merged[0] if len(merged) == 1 else self._node(merged, nodes)
                    kept = {e.ref.hash for e in merged}
                    self.unreferenced += [e.ref.hash for e in group if e.ref.hash not in kept]
                else:
                    new = self._node(group, nodes)
                if lvl + 1 == len(levels):
                    levels.append([])
                levels[lvl + 1].append(new)
            lvl += 1
        await self.note([h for _, h in nodes])
        await self._put_side_by_side(nodes)
        return levels

    def _node(self, entries: list[Entry], out: list[tuple[bytes, bytes]]) -> Entry:
        """The entry of a node listing `entries`: sealed here, its object (ciphertext, hash) added to `out`
        for the caller to write."""
        plain = encode_node(entries, self.sid, self.device)
        ct, ref = self._seal(plain)
        out.append((ct, ref.hash))
        return Entry(entries[0].first, entries[-1].last, sum(e.size for e in entries), True, ref)

    async def _put_side_by_side(self, objects: list[tuple[bytes, bytes]]) -> None:
        """Store objects (ciphertext, hash) all at once: on the store's own threads where it offers them
        (Store.put_in_background), so that a folder store's fsyncs overlap; else as one put. A first push
        of 100,000 chat-sized messages folds its 64 pages into 4 nodes: written one after another they
        took 7.2-8.5 ms, side by side 2.3-2.8 (medians of 15, bench/results/profile-push.md)."""
        futs = [self.store.put_in_background(ct, h) for ct, h in objects] if len(objects) > 1 else []
        rest = [o for o, f in itertools.zip_longest(objects, futs) if f is None]  # through put: one batch
        done = [asyncio.wrap_future(f) for f in futs if f is not None]
        if done:
            await gathered(done, self.timeout)  # (given up: nothing left unretrieved)
            self.written.objects += len(done)
            self.written.bytes += sum(len(ct) for (ct, _), f in zip(objects, futs) if f is not None)
        await self.put([ct for ct, _ in rest], [h for _, h in rest])

    def seal_manifest(self, plain: bytes, head_pk: bytes, rev: int) -> tuple[bytes, EncryptedCID]:
        # Not padded: a reader knows the manifest's size only from the ciphertext.
        return seal(plain, manifest_key(self.key, head_pk, rev), pad=False)


class _Stopped(Exception):
    """A worker of a _RunJob that stops because another failed or the push was cancelled."""


class _RunJob:
    """One long run written by worker threads (LogWriter.write_run). Chunks are handed out in seq
    order; each worker reads its chunk on its own connection and measures its operations (pagecut.measure),
    then waits for its turn to cut it into pages (the last page of a chunk may still fill up, so its
    operations go round again with the next chunk, as views of their contents), then encodes and seals
    the pages, has the last chunk's noted (LogWriter.note: one transaction a run) and writes them without
    waiting for anyone. Only the cut is taken in turn, and it is a bisection per page; pages stay full across chunk
    edges, and are those one reader of the whole run would cut (pagecut.cut), whatever the chunks and
    however the workers' turns fall. At most _WRITES_OUT objects are being written at a time: by the
    store's own threads where it offers them (Store.put_in_background), else through the event loop;
    either way a write that does not end within the writer's timeout fails the push."""

    def __init__(
        self,
        writer: LogWriter,
        first: int,
        last: int,
        open_loader: Callable[[], ContextManager[Callable[[int, int], LogRun]]],
        loop: asyncio.AbstractEventLoop,
    ):
        self.writer, self.last, self.open_loader, self.loop = writer, last, open_loader, loop
        self.cond = threading.Condition()
        self.next_seq = first
        self.chunk = _FIRST_CHUNK  # operations; then as many as make about STREAM_BYTES
        self.given = 0  # chunks handed out
        self.turn = 0  # the chunk whose cut is next
        # the last page cut so far, which may still fill up: its operations, their map column, and the
        # bytes they take by pagecut.measure
        self.carry, self.carry_bytes = LogRun.empty(), 0
        self.carry_maps: list = []
        self.limit = page_limit(writer.sid, writer.device)
        self.done: dict[int, tuple[list[Entry], int]] = {}  # chunk -> (entries, highest Lamport value)
        self.error: BaseException | None = None
        self.stopped = False
        self.slots = threading.Semaphore(_WRITES_OUT)
        self.writes: list[concurrent.futures.Future] = []

    def stop(self, error: BaseException | None = None) -> None:
        with self.cond:
            if error is not None and self.error is None and not isinstance(error, _Stopped):
                self.error = error
            self.stopped = True
            self.cond.notify_all()

    def work(self) -> None:
        try:
            with self.open_loader() as load:
                while self._chunk(load):
                    pass
        except _Stopped:
            pass
        except BaseException as exc:
            self.stop(exc)

    def _chunk(self, load: Callable[[int, int], LogRun]) -> bool:
        with self.cond:
            if self.stopped or self.next_seq > self.last:
                return False
            k, a = self.given, self.next_seq
            size, rest = self.chunk, self.last - a + 1
            if rest < 2 * size:  # the last chunks: halves of what is left, so that the workers end together
                size = max(size // _LAST_SPLIT, (rest + 1) // 2)
            b = min(self.last, a + size - 1)
            self.given, self.next_seq = k + 1, b + 1
        run = load(a, b)
        cum, maps = measure(run)  # per operation: beside the other workers, before this chunk's turn
        per_op = max(1, (sum(run.sizes) + 48 * len(run)) // max(1, len(run)))  # bytes per operation, about
        with self.cond:  # the cut, in chunk order: only where the pages end, a bisection per page
            while self.turn != k and not self.stopped:
                self.cond.wait()
            if self.stopped:
                raise _Stopped
            carry, carry_maps, c = self.carry, self.carry_maps, len(self.carry)
            if c:  # the carried page takes the operations of this chunk that still fit in it
                start = max(0, bisect_right(cum, self.limit - self.carry_bytes) - 1)
                ends = [c + start] + [c + e for e in page_ends(cum, self.limit, start)]
            else:
                ends = page_ends(cum, self.limit)
            bounds = [0, *ends]  # of carry + run
            count = len(ends)
            if b < self.last:  # the last page may still fill up: round again with the next chunk
                count -= 1
                at = bounds[count] - c
                if at >= 0:
                    self.carry, self.carry_maps = run.tail(at), maps[at:]
                    self.carry_bytes = cum[-1] - cum[at]
                else:  # the whole chunk went into the carried page
                    self.carry, self.carry_maps = carry + run, carry_maps + maps
                    self.carry_bytes += cum[-1]
            self.chunk = min(1 << 17, max(16, STREAM_BYTES // per_op))
            self.turn += 1
            self.cond.notify_all()
        if not count:
            return True
        upto = bounds[count] - c  # of this chunk, the operations in its pages
        lamport = max(run.lams[:upto], default=0)
        if c:  # the carried page, filled up with this chunk's first operations: its columns joined, its contents
            # left as pieces (LogRun.__add__), taken as views when the page is encoded
            first = carry + run.head(bounds[1] - c)
            pages = self.writer.page_chunks(first, ([0, len(first)], carry_maps + maps[: bounds[1] - c]), 1)
            pages += self.writer.page_chunks(run, ([e - c for e in bounds[1 : count + 1]], maps), count - 1)
            lamport = max(lamport, max(carry.lams))
        else:
            pages = self.writer.page_chunks(run, (bounds, maps), count)
        entries: list[Entry] = []
        objects: list[tuple[bytes | list[bytes], EncryptedCID]] = []
        for chunks, lo, hi in pages:
            sealed, ref, parts = self.writer._seal_chunks(chunks)
            objects += sealed
            entries.append(Entry(lo, hi, sum(map(len, chunks)), False, ref, parts))
        if self.writer.before_put is not None and b == self.last:
            # The last chunk's objects noted before any is written (one transaction a run): a retry after a kill
            # cuts the same full pages before them (the same operations from the same first seq, sealed under
            # keys of their plaintexts: the same objects, named by the retry's revision), and only the run's end
            # may differ. Noting every chunk's took the first push of 100,000 chat-sized messages 12% more CPU
            noted = asyncio.run_coroutine_threadsafe(self.writer.note([obj.hash for _, obj in objects]), self.loop)
            noted.result(self.writer.timeout)
        for ct, obj in objects:
            self._write(ct, obj.hash)
        self.done[k] = (entries, lamport)
        if self.writer.on_progress is not None and entries:
            self.loop.call_soon_threadsafe(self.writer.on_progress, entries[-1].last)
        return True

    def _write(self, ct: bytes | list[bytes], h: bytes) -> None:
        """Hand one object (its bytes, or its sealed chunks in order) to the store."""
        waited = 0.0
        while not self.slots.acquire(timeout=0.1):
            if self.stopped:
                raise _Stopped
            waited += 0.1
            if waited >= self.writer.timeout:  # _WRITES_OUT writes under way and none ends: a hung store
                raise TimeoutError(f"the store finished none of {_WRITES_OUT} writes in {self.writer.timeout:g} s")
        if self.stopped:
            self.slots.release()
            raise _Stopped
        fut = self.writer.store.put_in_background(ct, h)
        if fut is None:  # through the event loop, with the writer's timeout; writer.put counts it
            data = ct if isinstance(ct, bytes) else b"".join(ct)
            fut = asyncio.run_coroutine_threadsafe(self.writer.put([data], [h]), self.loop)
            size = None
        else:
            size = len(ct) if isinstance(ct, bytes) else sum(map(len, ct))
        with self.cond:
            self.writes.append(fut)
        fut.add_done_callback(lambda f: self._written(f, size))

    def _written(self, fut: concurrent.futures.Future, size: int | None) -> None:
        self.slots.release()
        if fut.cancelled():
            return
        if fut.exception() is not None:
            self.stop(fut.exception())
        elif size is not None:
            with self.cond:
                self.writer.written.objects += 1
                self.writer.written.bytes += size

    async def drain(self, cancel: bool = False) -> None:
        """Wait for every write handed out (at most the writer's timeout: a store that hangs fails
        the push, and a cancelled push does not wait on it); raise the first failure of the job."""
        with self.cond:
            writes = list(self.writes)
        if cancel:
            for fut in writes:
                fut.cancel()  # only those not started; a write under way finishes (it is atomic)
        if writes:
            waits = [asyncio.wrap_future(f) for f in writes]
            _, hung = await asyncio.wait(waits, timeout=self.writer.timeout)
            for w in waits:  # their failures are the job's (see _written): taken, not left unretrieved
                w.done() and (w.cancelled() or w.exception())
            if hung and not cancel:
                self.stop(TimeoutError(f"the store did not finish {len(hung)} writes in {self.writer.timeout:g} s"))
        if self.error is not None and not cancel:
            raise self.error

    def result(self) -> tuple[list[Entry], int]:
        if self.error is not None:
            raise self.error
        entries = [e for k in sorted(self.done) for e in self.done[k][0]]
        return entries, max((lam for _, lam in self.done.values()), default=0)
