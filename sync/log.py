"""One device's log of one session, as encrypted objects in a store (docs/FORMATS.md, "Snapshot layout").

The log is a sequence of operations numbered 1..n. It is stored as *pages* (runs of operations) and
*nodes* (lists of entries), all encrypted objects, and a *head manifest* that lists, level by level,
the entries that cover the log:

    levels[L] is a list of at most F-1 entries once a push completes; entries of level L+1 cover
    earlier operations than entries of level L. A push appends a page of the new operations to
    level 0; whenever a level holds F entries, its oldest F become one entry of the level above:
    one merged page if they are pages that fit in PAGE_MAX together, otherwise a node listing them.

So a push writes the new operations once, plus a manifest of O(F log n) entries, and every operation
is rewritten O(log n) times over its life: the cost of an append stays flat as the session grows.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import json
import os
import threading
from bisect import bisect_right
from itertools import accumulate, chain, compress, repeat
from operator import add, truediv
from dataclasses import dataclass
from typing import Awaitable, Callable, ContextManager, Iterator

from ..stores.cid import BlobId, CIDError
from ..storage.model import LogRun, Op, RemoteLog
from ..stores import Store, StoreError

from . import dagcbor
from .crypto import DecryptError, EncryptedCID, manifest_key, object_key, open_sealed, seal

FANOUT = 16
# Plaintext bytes of one page: four 256 KiB chunks less 4 KiB, so that with padding and tags the object
# is under the 1 MiB limit. Large pages, because a full push costs per object as well as per byte: 1 MB
# objects take half the system time of 500 KB ones to write and fsync (measured here: 0.12 against
# 0.29 CPU-seconds for 185 MB), and a long first push got about 10% faster.
PAGE_MAX = 1020 * 1024
VERSION = 1  # of nodes and manifests
PAGE_VERSION = 2  # pages are column by column since version 2
STREAM_BYTES = 8 << 20  # read, encoded and sealed at a time by one worker of a long push
_PAGE_HEAD = 512  # bounds a page's keys, column heads, version and type (device and session come on top)

T_PAGE = "sessiond/page"
MESSAGE = "message.add"
T_NODE = "sessiond/node"
T_PARTS = "sessiond/parts"
T_MANIFEST = "sessiond/manifest"


_SEALERS = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="sessiond-seal")
# A long push: worker threads that each read, encode and seal a chunk (one per core: their work
# releases the GIL), and hand the objects to the store (Store.put_in_background: a file store writes
# and fsyncs several at once on its own threads).
_WORKERS = max(1, min(4, os.cpu_count() or 1))
_PUSHERS = concurrent.futures.ThreadPoolExecutor(_WORKERS, thread_name_prefix="sessiond-push")
_WRITES_OUT = 32  # objects handed to the store and not yet written, at most (32 MiB)
_FIRST_CHUNK = 1024  # operations: a run no longer is read at once; a long one begins with a chunk of it


_gc_lock = threading.Lock()
_gc_holders = 0  # long runs being written
_gc_was_enabled = False


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while long runs are written (back on after the last).

    A long run makes an object per operation that lives until its chunk is written (a view of its
    content), so the collector would run every 700 of them and scan them again and again, holding
    the GIL and so stopping every worker: 8-15% of a first push (measured: 100,000 short messages
    0.40-0.43 s with it off, 0.46-0.50 s on). Nothing a push makes is in a cycle: reference counting
    still frees all of it at once. Garbage in cycles made elsewhere in the daemon meanwhile waits
    until the collector is back on, a second or so for a 200 MB session."""
    global _gc_holders, _gc_was_enabled
    with _gc_lock:
        if not _gc_holders:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_holders += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holders -= 1
            if not _gc_holders and _gc_was_enabled:
                gc.enable()


class LogError(ValueError):
    """A log in the store that is damaged, inconsistent or does not belong where it was found."""


# ---------------------------------------------------------------------------------------------- ops
def op_to_cbor(op: Op) -> dict:
    """An operation as one map in DAG-CBOR key order (b, k, l, s, t): the form `verify` compares
    (docs/FORMATS.md §4; pages store the same fields column by column)."""
    if op.kind == MESSAGE:
        b = op.body
        body: dict = {"c": b["chat"]}
        if b.get("extra"):
            body["e"] = dagcbor.canon(b["extra"])
        if b.get("tokens") is not None:
            body["n"] = b["tokens"]
        body["r"] = b["role"]
        body["x"] = b["content"]
    else:
        body = dagcbor.canon(op.body)
    return {"b": body, "k": op.kind, "l": op.lamport, "s": op.seq, "t": round(op.created_at * 1000)}


# ---------------------------------------------------------------------------------------------- entries
@dataclass
class Entry:
    first: int  # first seq covered
    last: int  # last seq covered
    size: int  # plaintext bytes of the page, or of all pages below a node
    node: bool
    ref: EncryptedCID
    parts: bool = False  # a page too large for one object: ref is its list of parts

    def to_cbor(self) -> dict:
        return {"c": self.ref.to_bytes(), "f": self.first, "k": 1 if self.node else 2 if self.parts else 0,
                "n": self.size, "t": self.last}

    @classmethod
    def from_cbor(cls, m: dict) -> "Entry":
        try:
            kind = m["k"]
            if kind not in (0, 1, 2) or isinstance(kind, bool):
                raise ValueError(f"unknown kind {kind!r} (0 page, 1 node, 2 page in parts)")
            return cls(int(m["f"]), int(m["t"]), int(m["n"]), kind == 1, EncryptedCID.from_bytes(m["c"]), kind == 2)
        except (KeyError, TypeError, ValueError, CIDError) as exc:
            raise LogError(f"malformed entry: {exc}") from None


@dataclass
class Written:
    """What a push put in the store (for statistics and the benchmark)."""

    objects: int = 0
    bytes: int = 0


def _head(major: int, n: int) -> bytes:
    """A CBOR head in its shortest form (as DAG-CBOR requires)."""
    if n < 24:
        return bytes([major << 5 | n])
    for extra, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes([major << 5 | extra]) + n.to_bytes(width, "big")
    raise ValueError("CBOR lengths stop at 2^64")


_enc = dagcbor.encode_ordered
# The head of a text string of n bytes for every n under 64 KiB, and null (the contents item of an
# operation that is not a message) last, where index -1 (LogRun.sizes' mark for it) finds it.
_TEXT_HEADS = [_head(3, n) for n in range(1 << 16)] + [b"\xf6"]
_VERSION_ITEM = _enc("v") + _enc(PAGE_VERSION)
_TYPE_ITEM = _enc("ty") + _enc(T_PAGE)


def _text_heads(sizes: list[int]) -> list[bytes]:
    if max(sizes) < 1 << 16:
        return list(map(_TEXT_HEADS.__getitem__, sizes))
    return [_head(3, z) if z >= 0 else b"\xf6" for z in sizes]


class LogWriter:
    """Builds pages, nodes and manifests for one (session, device) log."""

    def __init__(self, sid: str, device: str, session_key: bytes, store: Store, timeout: float = 30.0):
        self.sid = sid
        self.device = device
        self.key = session_key
        self.store = store
        self.timeout = timeout
        self.written = Written()

    async def put(self, ciphertexts: list[bytes], hashes: list[bytes] | None = None) -> None:
        """Store objects; `hashes` are their BLAKE3 hashes when sealing has just computed them."""
        if not ciphertexts:
            return
        put_many = getattr(self.store, "put_many", None)
        if put_many is not None:
            await asyncio.wait_for(put_many(ciphertexts, hashes), self.timeout)
        else:
            for c in ciphertexts:
                await asyncio.wait_for(self.store.put(c), self.timeout)
        self.written.objects += len(ciphertexts)
        self.written.bytes += sum(len(c) for c in ciphertexts)

    def _seal(self, plaintext: bytes) -> tuple[bytes, EncryptedCID]:
        plain = BlobId.of(plaintext)
        return seal(plaintext, object_key(self.key, plain.hash), plain=plain)

    def cut(self, run: LogRun) -> tuple[list[int], list]:
        """Where the pages of a run of operations (consecutive seqs) begin: ([0, ..., len(run)], the
        map column). Pages are at most PAGE_MAX bytes; an operation larger than that is a page of
        its own. Sizes are bounded from above, without encoding anything but the maps."""
        n = len(run)
        if not n:
            return [0], []
        first, sizes = run.seqs[0], run.sizes
        if run.seqs != list(range(first, first + n)):
            raise LogError(f"operations to write are not one run of consecutive seqs from {first}")
        col_b: list = [None] * n
        est = list(map(max, sizes, repeat(0))) if -1 in sizes else list(sizes)  # bytes per operation
        if run.bodies.count(None) != n or run.extras.count(None) != n:
            for i, (body, extra) in enumerate(zip(run.bodies, run.extras)):
                if body is not None:
                    col_b[i] = dagcbor.canon(json.loads(body))
                elif extra and (e := json.loads(extra)):
                    col_b[i] = dagcbor.canon(e)
                if col_b[i] is not None:
                    est[i] += len(dagcbor.encode_ordered(col_b[i]))
        # per operation besides content and map: seven more columns, each item at most a 9-byte head
        # plus its text (4 bytes per character bounds any UTF-8)
        const = 64 + 4 * (max(map(len, set(run.kinds))) + max(map(len, filter(None, set(run.chats))), default=0)
                          + max(map(len, filter(None, set(run.roles))), default=0))
        cum = list(accumulate(map(add, est, repeat(const)), initial=0))
        limit = PAGE_MAX - _PAGE_HEAD - 4 * (len(self.device) + len(self.sid))
        bounds = [0]
        while bounds[-1] < n:
            lo = bounds[-1]
            bounds.append(max(lo + 1, bisect_right(cum, cum[lo] + limit) - 1))
        return bounds, col_b

    def pages(self, run: LogRun, cut: tuple[list[int], list] | None = None,
              count: int | None = None) -> list[tuple[bytes, int, int]]:
        """Encode a run of operations as page plaintexts: [(plaintext, first seq, last seq)], cut as
        `cut` (default: self.cut(run)), the first `count` pages of it (default: all). The hot path of
        a push, so nothing here is done per operation in Python: the small columns are one cbor2 call
        each per page, and the contents column is written straight from the run's UTF-8 (a CBOR text
        head, then the bytes, for each) by one join, without a string per message."""
        bounds, col_b = cut or self.cut(run)
        count = len(bounds) - 1 if count is None else count
        if not count:
            return []
        upto = bounds[count]
        first, sizes = run.seqs[0], run.sizes[:upto]
        times = list(map(round, map((1000.0).__mul__, run.created[:upto])))  # milliseconds, as round(c * 1000)
        heads = _text_heads(sizes)
        pieces = run.pieces()
        kinds, chats, roles = run.kinds, run.chats, run.roles
        dev, sid = _enc(self.device), _enc(self.sid)
        out = []
        for lo, hi in zip(bounds[:count], bounds[1:count + 1]):
            # the map, keys in DAG-CBOR order (length, then bytewise): b c d f k l n r s t v x ty
            parts = [b"\xad", b"\x61b", _enc(col_b[lo:hi]), b"\x61c", _enc(chats[lo:hi]), b"\x61d", dev,
                     b"\x61f", _enc(first + lo), b"\x61k", _enc(kinds[lo:hi]), b"\x61l", _enc(run.lams[lo:hi]),
                     b"\x61n", _enc(run.toks[lo:hi]), b"\x61r", _enc(roles[lo:hi]), b"\x61s", sid,
                     b"\x61t", _enc(times[lo:hi]), _VERSION_ITEM, b"\x61x", _head(4, hi - lo)]
            parts += chain.from_iterable(zip(heads[lo:hi], pieces[lo:hi]))
            parts.append(_TYPE_ITEM)
            out.append((b"".join(parts), first + lo, first + hi - 1))
        return out

    def _seal_page(self, plain: bytes) -> tuple[list[tuple[bytes, EncryptedCID]], EncryptedCID, bool]:
        """Seal one page: (the objects to store, the reference its entry holds, whether it is in parts).
        A page is larger than PAGE_MAX only when one operation is (a message of megabytes): it is cut
        into parts of PAGE_MAX bytes, each its own object, listed in order by a parts object, so that
        every object stays under the 1 MiB limit."""
        if len(plain) <= PAGE_MAX:
            ct, ref = self._seal(plain)
            return [(ct, ref)], ref, False
        view = memoryview(plain)
        sealed = [self._seal(bytes(view[i:i + PAGE_MAX])) for i in range(0, len(plain), PAGE_MAX)]
        index = self._seal(dagcbor.encode_ordered({"d": self.device, "p": [ref.to_bytes() for _, ref in sealed],
                                                   "s": self.sid, "v": VERSION, "ty": T_PARTS}))
        return sealed + [index], index[1], True

    async def _seal_and_put(self, pages: list[tuple[bytes, int, int]], *, inline: bool = False) -> list[Entry]:
        if inline:  # a few small pages: quicker here than a hop to another thread
            sealed = [self._seal_page(p[0]) for p in pages]
        else:  # libsodium and BLAKE3 release the GIL: the sealing threads work beside the encoding of
            # the next chunk and the writing of the one before
            loop = asyncio.get_running_loop()
            sealed = await asyncio.gather(*(loop.run_in_executor(_SEALERS, self._seal_page, p[0]) for p in pages))
        objects = [o for objs, _, _ in sealed for o in objs]
        await self.put([ct for ct, _ in objects], [ref.hash for _, ref in objects])
        return [Entry(first, last, len(plain), False, ref, parts)
                for (plain, first, last), (_, ref, parts) in zip(pages, sealed)]

    async def write_pages(self, run: LogRun) -> list[Entry]:
        """Encode, seal and store a run of operations (all in memory) as pages."""
        if len(run) < 64:
            return await self._seal_and_put(self.pages(run), inline=True)
        # CPU work: off the event loop, so the API stays quick
        return await self._seal_and_put(await asyncio.to_thread(self.pages, run))

    async def write_run(self, load: Callable[[int, int], Awaitable[LogRun]],
                        open_loader: Callable[[], ContextManager[Callable[[int, int], LogRun]]],
                        first: int, last: int) -> tuple[list[Entry], int]:
        """Store operations first..last as pages. Returns (entries, highest Lamport value).

        A short run is read at once with `load(a, b)` (async; Database.log_run for seqs a..b). A long
        one is read a chunk of about STREAM_BYTES at a time, so that memory stays bounded whatever its
        size, by worker threads that each take the next chunk and read, encode, seal and write it: the
        heavy work (SQLite, libsodium, BLAKE3, file writes) releases the GIL, so the workers run side
        by side, and nothing is handed to the event loop per page. `open_loader()` gives a worker its
        own reader: a context manager yielding a plain function load(a, b) -> LogRun."""
        if last - first < _FIRST_CHUNK:
            run = await load(first, last)
            return await self.write_pages(run), max(run.lams, default=0)
        job = _RunJob(self, first, last, open_loader, asyncio.get_running_loop())
        with _gc_paused():
            # asyncio.wait, not gather: cancelling this push must not drop the workers while they run
            workers = [asyncio.wrap_future(_PUSHERS.submit(job.work)) for _ in range(_WORKERS)]
            try:
                await asyncio.wait(workers)
                await job.drain()
            except BaseException:
                job.stop()  # the workers stop at their next step; let them and their writes wind down
                await asyncio.wait(workers)
                await job.drain(cancel=True)
                raise
            return job.result()

    async def compact(self, levels: list[list[Entry]],
                      load_records: Callable[[int, int], Awaitable[LogRun]]) -> list[list[Entry]]:
        """Fold full levels upward (see the module doc). `load_records(first, last)` gives this log's
        operations first..last (Database.log_run)."""
        levels = [list(lv) for lv in levels]
        lvl = 0
        while lvl < len(levels):
            while len(levels[lvl]) >= FANOUT:
                group, levels[lvl] = levels[lvl][:FANOUT], levels[lvl][FANOUT:]
                size = sum(e.size for e in group)
                if not any(e.node or e.parts for e in group) and size <= PAGE_MAX:
                    merged = await self.write_pages(await load_records(group[0].first, group[-1].last))
                    new = merged[0] if len(merged) == 1 else await self._node(merged)
                else:
                    new = await self._node(group)
                if lvl + 1 == len(levels):
                    levels.append([])
                levels[lvl + 1].append(new)
            lvl += 1
        return levels

    async def _node(self, entries: list[Entry]) -> Entry:
        plain = dagcbor.encode_ordered({"d": self.device, "e": [e.to_cbor() for e in entries], "s": self.sid,
                                        "v": VERSION, "ty": T_NODE})
        ct, ref = self._seal(plain)
        await self.put([ct])
        return Entry(entries[0].first, entries[-1].last, sum(e.size for e in entries), True, ref)

    def manifest(self, rev: int, head_pk: bytes, last_seq: int, lamport: int, levels: list[list[Entry]],
                 prev: bytes | None) -> bytes:
        m = {"d": self.device, "k": head_pk, "l": [[e.to_cbor() for e in lv] for lv in levels], "n": last_seq,
             "r": rev, "s": self.sid, "v": VERSION, "ty": T_MANIFEST, "lam": lamport}
        if prev is not None:
            m["prev"] = dagcbor.Link(prev)
        return dagcbor.encode(m)

    def seal_manifest(self, plain: bytes, head_pk: bytes, rev: int) -> tuple[bytes, EncryptedCID]:
        # Not padded: a reader knows the manifest's size only from the ciphertext.
        return seal(plain, manifest_key(self.key, head_pk, rev), pad=False)


class _Stopped(Exception):
    """A worker of a _RunJob that stops because another failed or the push was cancelled."""


class _RunJob:
    """One long run written by worker threads (LogWriter.write_run). Chunks are handed out in seq
    order; each worker reads its chunk on its own connection, then waits for its turn to cut it into
    pages (the last page of a chunk may still fill up, so its operations go round again with the next
    chunk, as views of their contents), then encodes, seals and writes the pages without waiting for
    anyone. Only the cut is taken in turn, and it is cheap (sizes only); pages stay full across chunk
    edges, as if one reader went through the run in order. At most _WRITES_OUT objects are being
    written at a time: by the store's own threads where it offers them (Store.put_in_background), else
    through the event loop; either way a write that does not end within the writer's timeout fails
    the push."""

    def __init__(self, writer: "LogWriter", first: int, last: int,
                 open_loader: Callable[[], ContextManager[Callable[[int, int], LogRun]]],
                 loop: asyncio.AbstractEventLoop):
        self.writer, self.last, self.open_loader, self.loop = writer, last, open_loader, loop
        self.cond = threading.Condition()
        self.next_seq = first
        self.chunk = _FIRST_CHUNK  # operations; then as many as make about STREAM_BYTES
        self.given = 0  # chunks handed out
        self.turn = 0  # the chunk whose cut is next
        self.carry = LogRun.empty()
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
            b = min(self.last, a + self.chunk - 1)
            self.given, self.next_seq = k + 1, b + 1
        run = load(a, b)
        with self.cond:  # the cut, in chunk order
            while self.turn != k and not self.stopped:
                self.cond.wait()
            if self.stopped:
                raise _Stopped
            if len(self.carry):
                run = self.carry + run
            cut = self.writer.cut(run)
            count = len(cut[0]) - 1
            if b < self.last:  # the last page may still fill up: round again with the next chunk
                count -= 1
                self.carry = run.tail(cut[0][count])
            per_op = max(1, (sum(run.sizes) + 48 * len(run)) // max(1, len(run)))  # bytes per operation, about
            self.chunk = min(1 << 17, max(16, STREAM_BYTES // per_op))
            self.turn += 1
            self.cond.notify_all()
        if not count:
            return True
        entries = []
        for plain, lo, hi in self.writer.pages(run, cut, count):
            objects, ref, parts = self.writer._seal_page(plain)
            for ct, obj in objects:
                self._write(ct, obj.hash)
            entries.append(Entry(lo, hi, len(plain), False, ref, parts))
        self.done[k] = (entries, max(run.lams[:cut[0][count]]))
        return True

    def _write(self, ct: bytes, h: bytes) -> None:
        waited = 0.0
        while not self.slots.acquire(timeout=0.1):
            if self.stopped:
                raise _Stopped
            waited += 0.1
            if waited >= self.writer.timeout:  # _WRITES_OUT writes under way and none ends: a hung store
                raise asyncio.TimeoutError(f"the store finished none of {_WRITES_OUT} writes in "
                                           f"{self.writer.timeout:g} s")
        if self.stopped:
            self.slots.release()
            raise _Stopped
        fut = self.writer.store.put_in_background(ct, h)
        if fut is None:  # through the event loop, with the writer's timeout; writer.put counts it
            fut = asyncio.run_coroutine_threadsafe(self.writer.put([ct], [h]), self.loop)
            size = None
        else:
            size = len(ct)
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
                self.stop(asyncio.TimeoutError(f"the store did not finish {len(hung)} writes in "
                                               f"{self.writer.timeout:g} s"))
        if self.error is not None and not cancel:
            raise self.error

    def result(self) -> tuple[list[Entry], int]:
        if self.error is not None:
            raise self.error
        entries = [e for k in sorted(self.done) for e in self.done[k][0]]
        return entries, max((lam for _, lam in self.done.values()), default=0)


# ---------------------------------------------------------------------------------------------- reading
@dataclass
class Manifest:
    sid: str
    device: str
    head_pk: bytes
    rev: int
    last_seq: int
    lamport: int
    levels: list[list[Entry]]
    prev: bytes | None

    def entries(self) -> list[Entry]:
        """All top entries in log order (highest level first)."""
        return [e for lv in reversed(self.levels) for e in lv]


def parse_manifest(plain: bytes, *, sid: str, head_pk: bytes, rev: int) -> Manifest:
    try:
        m = dagcbor.decode(plain)
    except dagcbor.DagCborError as exc:
        raise LogError(f"head manifest is not valid: {exc}") from None
    if not isinstance(m, dict) or m.get("ty") != T_MANIFEST:
        raise LogError("head object is not a sessiond manifest")
    if m.get("v") != VERSION:
        raise LogError(f"manifest version {m.get('v')!r} is not supported by this sessiond")
    if m.get("s") != sid:
        raise LogError(f"manifest belongs to session {m.get('s')!r}, not {sid!r} (swapped objects)")
    if m.get("k") != head_pk:
        raise LogError("manifest names another signing key than the head that points to it")
    if m.get("r") != rev:
        raise LogError(f"manifest says revision {m.get('r')!r} but its head has revision {rev} (replayed)")
    try:
        levels = [[Entry.from_cbor(e) for e in lv] for lv in m["l"]]
        man = Manifest(sid, str(m["d"]), head_pk, rev, int(m["n"]), int(m.get("lam", 0)), levels,
                       bytes(m["prev"]) if m.get("prev") is not None else None)
    except (KeyError, TypeError, ValueError) as exc:
        raise LogError(f"malformed manifest: {exc!r}") from None
    expect = 1
    for e in man.entries():
        if e.first != expect or e.last < e.first:
            raise LogError(f"manifest entries are not contiguous at seq {expect} (reordered or damaged manifest)")
        expect = e.last + 1
    if expect - 1 != man.last_seq:
        raise LogError(f"manifest covers up to seq {expect - 1} but claims {man.last_seq}")
    return man


class LogReader:
    """Fetches and checks a log's objects. Every object's hash, tag, plaintext id, session, device and
    sequence range is checked; anything else raises LogError or a store error naming the object."""

    def __init__(self, sid: str, device: str, store: Store, timeout: float = 30.0):
        self.sid = sid
        self.device = device
        self.store = store
        self.timeout = timeout
        self.fetched = 0

    async def _get(self, ref: EncryptedCID) -> bytes:
        ct = await asyncio.wait_for(self.store.get(ref.hash), self.timeout)
        self.fetched += 1
        return open_sealed(ct, ref)

    def _check_owner(self, m: dict, what: str) -> None:
        if m.get("s") != self.sid:
            raise LogError(f"{what} belongs to session {m.get('s')!r}, not {self.sid!r} (swapped objects)")
        if m.get("d") != self.device:
            raise LogError(f"{what} belongs to device {m.get('d')!r}, not {self.device!r} (swapped objects)")

    async def pages(self, entries: list[Entry], after_seq: int = 0) -> list[tuple[Entry, "Page"]]:
        """The checked pages under `entries` that hold any seq > after_seq, in log order."""
        out: list[tuple[Entry, Page]] = []
        for e in entries:
            if e.last <= after_seq:
                continue
            plain = await self._get(e.ref)
            if e.node:
                out.extend(await self.pages(self._children(plain, e), after_seq))
            elif e.parts:
                out.append((e, self._page(await self._joined(plain, e), e)))
            else:
                out.append((e, self._page(plain, e)))
        return out

    async def ops(self, entries: list[Entry], after_seq: int = 0) -> list[Op]:
        """The operations of `entries` with seq > after_seq, in order."""
        out: list[Op] = []
        for e, page in await self.pages(entries, after_seq):
            out.extend(page.ops(self.sid, self.device, max(0, after_seq + 1 - e.first)))
        return out

    async def log(self, entries: list[Entry], after_seq: int = 0) -> RemoteLog:
        """The operations of `entries` with seq > after_seq, ready for Database.apply_remote: messages
        as rows for one batched insert (built column-wise, in C), other operations as Ops."""
        out = RemoteLog(self.device, [], [], after_seq)
        for e, page in await self.pages(entries, after_seq):
            page.into(out, self.sid, self.device, max(0, after_seq + 1 - e.first))
            out.last_seq = e.last
        return out

    async def audit(self, entries: list[Entry]) -> tuple[list[Op], list[tuple[bytes, Entry, BaseException]]]:
        """Read and check every object under `entries`, going on past a damaged or missing one, for
        `verify`: (the operations of every sound page, in log order; (object hash, the entry it was
        reached by, what is wrong) for each object that cannot be read or is not what its entry says).
        Unlike pages(), which stops at the first problem, this names every damaged object that can
        be reached: only what lies below a damaged node or parts object cannot be listed."""
        ops: list[Op] = []
        bad: list[tuple[bytes, Entry, BaseException]] = []
        unreadable = (StoreError, DecryptError, LogError, asyncio.TimeoutError, OSError)

        async def visit(e: Entry) -> None:
            try:
                plain = await self._get(e.ref)
                if e.node:
                    children = self._children(plain, e)
                elif e.parts:
                    refs = self._part_refs(plain, e)
            except unreadable as exc:
                bad.append((e.ref.hash, e, exc))
                return
            if e.node:
                for c in children:
                    await visit(c)
                return
            if e.parts:
                chunks = []
                for r in refs:
                    try:
                        chunks.append(await self._get(r))
                    except unreadable as exc:
                        bad.append((r.hash, e, exc))
                if len(chunks) != len(refs):
                    return
                plain = b"".join(chunks)
            try:
                ops.extend(self._page(plain, e).ops(self.sid, self.device))
            except LogError as exc:
                bad.append((e.ref.hash, e, exc))

        for e in entries:
            await visit(e)
        return ops, bad

    async def _joined(self, plain: bytes, e: Entry) -> bytes:
        """The plaintext of a page stored in parts (`plain` is its parts object)."""
        return b"".join([await self._get(r) for r in self._part_refs(plain, e)])

    def _part_refs(self, plain: bytes, e: Entry) -> list[EncryptedCID]:
        """The checked list of parts of a page stored in parts (`plain` is its parts object)."""
        name = e.ref.hash.hex()[:16]
        try:
            m = dagcbor.decode(plain)
        except dagcbor.DagCborError as exc:
            raise LogError(f"parts object {name} is not valid: {exc}") from None
        if not isinstance(m, dict) or m.get("ty") != T_PARTS or m.get("v") != VERSION:
            raise LogError(f"object {name} is not a list of page parts")
        self._check_owner(m, "parts object")
        try:
            refs = [EncryptedCID.from_bytes(p) for p in m["p"]]
        except (KeyError, TypeError, CIDError) as exc:
            raise LogError(f"parts object {name} is malformed: {exc}") from None
        if sum(r.plain.size for r in refs) != e.size or not refs:
            raise LogError(f"parts object {name} does not add up to the {e.size} bytes its entry names")
        return refs

    def _children(self, plain: bytes, e: Entry) -> list[Entry]:
        name = e.ref.hash.hex()[:16]
        try:
            m = dagcbor.decode(plain)
        except dagcbor.DagCborError as exc:
            raise LogError(f"node {name} is not valid: {exc}") from None
        if not isinstance(m, dict) or m.get("ty") != T_NODE:
            raise LogError(f"object {name} is not a node")
        self._check_owner(m, "node")
        children = [Entry.from_cbor(c) for c in m.get("e", [])]
        expect = e.first
        for c in children:
            if c.first != expect:
                raise LogError(f"node {name} has a gap or overlap at seq {expect}")
            expect = c.last + 1
        if expect - 1 != e.last:
            raise LogError(f"node {name} does not cover seqs {e.first}..{e.last}")
        return children

    def _page(self, plain: bytes, e: Entry) -> "Page":
        name = e.ref.hash.hex()[:16]
        try:
            m = dagcbor.decode(plain, strict=False)
        except dagcbor.DagCborError as exc:
            raise LogError(f"page {name} is not valid: {exc}") from None
        if not isinstance(m, dict) or m.get("ty") != T_PAGE:
            raise LogError(f"object {name} is not a page")
        if m.get("v") != PAGE_VERSION:
            raise LogError(f"page {name} is of version {m.get('v')!r}; this sessiond reads version {PAGE_VERSION}")
        self._check_owner(m, "page")
        if m.get("f") != e.first:
            raise LogError(f"page {name} does not hold seqs {e.first}..{e.last}")
        n = e.last - e.first + 1
        cols = [m.get(k) for k in ("k", "l", "t", "c", "r", "x", "n", "b")]
        if not all(isinstance(c, list) and len(c) == n for c in cols):
            raise LogError(f"page {name} does not hold seqs {e.first}..{e.last} (columns of the wrong length)")
        page = Page(e.first, *cols)
        why = page.malformed()
        if why:
            raise LogError(f"page {name} is malformed: {why}")
        return page


_NONE = type(None)


@dataclass
class Page:
    """One page's operations, column by column, as stored (docs/FORMATS.md §4)."""

    first: int
    kinds: list
    lamports: list
    times: list
    chats: list
    roles: list
    contents: list
    tokens: list
    maps: list  # a message's extra fields or None; another operation's body

    def others(self) -> list[int]:
        """Indexes of the operations that are not messages."""
        if self.kinds.count(MESSAGE) == len(self.kinds):
            return []
        return [i for i, k in enumerate(self.kinds) if k != MESSAGE]

    def malformed(self) -> str | None:
        """What is wrong with the columns' types, or None. Checked a column at a time (in C)."""
        if not set(map(type, self.kinds)) <= {str}:
            return "an operation kind is not text"
        if not set(map(type, self.lamports)) <= {int} or not set(map(type, self.times)) <= {int}:
            return "a clock or time is not an integer"
        if not set(map(type, self.tokens)) <= {int, _NONE} or not set(map(type, self.maps)) <= {dict, _NONE}:
            return "a token count or map has the wrong type"
        others = self.others()
        text = {str, _NONE} if others else {str}
        for col, what in ((self.chats, "chat id"), (self.roles, "role"), (self.contents, "content")):
            if not set(map(type, col)) <= text or col.count(None) != len(others):
                return f"a message's {what} is missing or not text, or an operation that is not a message has one"
        for i in others:
            if self.chats[i] is not None or self.roles[i] is not None or self.contents[i] is not None \
                    or self.tokens[i] is not None:
                return f"operation {self.first + i} ({self.kinds[i]}) has message fields but is not a message"
            if self.maps[i] is None:
                return f"operation {self.first + i} ({self.kinds[i]}) has no body"
        return None

    def ops(self, sid: str, device: str, start: int = 0) -> list[Op]:
        out = []
        for i in range(start, len(self.kinds)):
            kind, t = self.kinds[i], self.times[i] / 1000
            if kind == MESSAGE:
                body = {"chat": self.chats[i], "role": self.roles[i], "content": self.contents[i],
                        "tokens": self.tokens[i], "extra": self.maps[i]}
            else:
                body = self.maps[i]
            out.append(Op(sid, device, self.first + i, self.lamports[i], kind, body, t))
        return out

    def into(self, log: RemoteLog, sid: str, device: str, start: int = 0) -> None:
        """Add this page's operations from index `start` to `log`: messages as insert rows, built
        column-wise; the other operations (few) one by one."""
        n = len(self.kinds)
        if start >= n:
            return
        others = self.others()
        if self.maps.count(None) == len(self.maps):
            extras = repeat(None)
        else:
            extras = [None] * n
            for i, m in enumerate(self.maps):
                if m is not None and self.kinds[i] == MESSAGE:
                    extras[i] = json.dumps(m, separators=(",", ":"), ensure_ascii=False)
            extras = extras[start:]
        k = slice(start, n)
        rows = zip(repeat(sid), self.chats[k], repeat(device), range(self.first + start, self.first + n),
                   self.lamports[k], self.roles[k], self.contents[k], self.tokens[k],
                   map(truediv, self.times[k], repeat(1000)), extras)
        if others:
            log.messages.extend(compress(rows, map(MESSAGE.__eq__, self.kinds[k])))
            log.ops.extend(Op(sid, device, self.first + i, self.lamports[i], self.kinds[i], self.maps[i],
                              self.times[i] / 1000) for i in others if i >= start)
        else:
            log.messages.extend(rows)
