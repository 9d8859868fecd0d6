"""Mirrors: several stores behind one `Store`, so that the sync engine needs no change to use them.

Writes go to every store. A store that fails a write (or still has writes waiting) gets it through its
own durable outbox instead (storage/outbox.py, rows in SQLite written before the write returns), which a
background task (sync/mirrordrain.py) drains in order once the store answers again: objects first, then
the heads that name them. A store that is down therefore blocks none of the others, and catches up,
across a restart of the daemon too; one that hangs instead of refusing holds a write at most LAG seconds
after another store took it, and is then failed as a store that is down. A write succeeds when at least
one store took it directly; when none did, it fails (the push retries, as with one store) and the
outboxes keep it for the stores anyway.

Reads: an object from whichever store has it (each store verifies what it returns; a store answering
damaged bytes is skipped for the next), a head as the highest valid revision among the stores, so a
store serving a stale head loses to a newer one (of two entries of one revision, the one every device of
the mirror takes, whatever the order of its stores). What a read through the mirror cannot show, whether
each store holds it, `verify` asks each store (sync/mirrorcheck.py).

Each store's health, and `status()`'s rows of it (reachable, pending, the last error): sync/mirrorhealth.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence

from nacl.signing import SigningKey

from ..storage.outbox import Outbox
from ..storage.redact import shown_url
from ..stores import CorruptObject, ObjectMissing, StaleHead, Store, StoreError, open_store
from ..stores.bounded import bounded
from ..stores.cid import digest
from ..stores.errors import RateLimited, ReadOnlyStore, StoreTimeout
from ..stores.registry import RegistryEntry
from .mirrorapart import note_apart
from .mirrorcheck import note_head, note_object
from .mirrordrain import FAILURES, Drain
from .mirrorhealth import MirrorHealth, describe_error
from .mirrorurls import SEPARATOR, mirror_urls
from .outboxrows import HeadKey
from .tasks import stop_tasks

log = logging.getLogger("sessiond.sync")

# Seconds a write waits for the slower stores of a mirror once one store has taken it (MirrorStore._bounded).
LAG = 5.0


def open_stores(
    url: str,
    outbox: Outbox,
    *,
    timeout: float = 30.0,
    create: bool | Collection[str] = True,
    missing_ok: bool = False,
    head_key: HeadKey | None = None,
) -> Store:
    """The store a store identity names: one store, or a mirror of several (its drain started; call
    from the event loop). `create`, `missing_ok`: a folder store's, as open_store (`create` for every
    store, or for the stores of these URLs only); `head_key`: see MirrorStore."""
    urls = mirror_urls(url)
    opened = [
        open_store(u, create=create if isinstance(create, bool) else u in create, missing_ok=missing_ok) for u in urls
    ]
    if len(opened) == 1:
        return opened[0]
    mirror = MirrorStore(opened, outbox, timeout=timeout, head_key=head_key)
    mirror.start()
    return mirror


def highest(entries: Sequence[RegistryEntry]) -> RegistryEntry:
    """The head a mirror reads of several stores' `entries`: the highest revision; of two of one revision, the same one
    on every device, whatever its stores' order (a rekey ranks two notices held apart by it: sync/mirrorstrict.py)."""
    return max(entries, key=lambda e: (e.revision, e.data))


class MirrorFailed(StoreError):
    """A read no store of a mirror answered: `failures`, each store's own failure and its URL, in the order asked
    (sync/errors.store_details names each)."""

    def __init__(self, message: str, failures: list[tuple[BaseException, str]]):
        super().__init__(message)
        self.failures = failures


class MirrorStore(MirrorHealth):
    def __init__(
        self,
        stores: list[Store],
        outbox: Outbox,
        *,
        timeout: float = 30.0,
        max_backoff: float = 10.0,
        lag: float = LAG,
        head_key: HeadKey | None = None,
    ):
        """`head_key(pk)`: the signing key of this device's head `pk` (None if not its own), for a head
        sent from an outbox, which keeps the entry without its key, to a store that signs heads in a
        format of its own (Kubo: an IPNS record)."""
        if len(stores) < 2:
            raise StoreError("a mirror is two stores or more")
        super().__init__(stores, outbox, timeout=timeout, max_backoff=max_backoff)
        for s in stores:  # a store's Retry-After is waited for by the drain, not by a write the others took
            s.fail_rate_limits_at_once()
        self.url = SEPARATOR.join(s.url for s in stores)
        self.lag = lag  # how long the others wait for a store once one took a write (see _bounded)
        self.head_key = head_key
        self._task: asyncio.Task | None = None
        self._drain = Drain(
            stores, outbox, self.health, timeout=timeout, head_key=head_key, ok=self._ok, failed=self._failed
        )

    def __repr__(self) -> str:
        return f"MirrorStore({[s.url for s in self.stores]})"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start draining (on the running event loop): the outboxes are counted first, so a restart
        resumes what waits there; writes meanwhile are queued behind it."""
        if self._task is None and not self._drain.closed:
            self._task = asyncio.get_running_loop().create_task(self._drain.loop(), name="sessiond-mirror")

    async def started(self) -> None:
        """start(), and return once the outboxes are counted (writes go straight to the stores from then)."""
        self.start()
        await self._drain.ready.wait()

    def wake(self) -> None:
        """The drain looks at the outboxes now rather than at its next timer: each store with writes waiting
        is sent them, or left alone while it is known down (its backoff, or its Retry-After, not yet over)."""
        self._drain.wake()

    async def close(self) -> None:
        self._drain.close()
        if self._task is not None:
            await stop_tasks([self._task])
            self._task = None
        for s in self.stores:
            await s.close()

    def _direct(self, st: Store) -> bool:
        """Whether a write goes to `st` now (else to its outbox, behind what waits there)."""
        return self._drain.counted and not self.health[st.url].pending and self._usable(st)

    # ------------------------------------------------------------------ writes
    async def _queue_objects(self, st: Store, items: list[tuple[bytes, bytes]]) -> None:
        await self.outbox.add_objects(st.url, items)
        self._queued(st, len(items))

    async def _queue_head(self, st: Store, entry: RegistryEntry) -> None:
        await self.outbox.add_head(st.url, entry.pk, entry.to_bytes(), entry.revision)
        self._queued(st, 1)

    def _queued(self, st: Store, n: int) -> None:
        h = self.health[st.url]
        h.pending += n  # an estimate until the next count (a row queued twice counts twice)
        h.added += 1
        self.wake()

    async def _write_to(
        self,
        st: Store,
        write: Callable[[], Awaitable[object]],
        queue: Callable[[], Awaitable[None]],
        took: asyncio.Event,
    ) -> bool | StaleHead:
        """One write to one store: now if it goes straight there (`_direct`), else, or when it fails,
        `queue`d in the store's outbox for the drain loop. Returns whether the store took it, or the
        StaleHead it answered (it holds as high a head: it answered, nothing to queue). A read-only
        store neither takes nor queues it. `took` is set by the first store of the mirror that takes it."""
        if self.health[st.url].read_only:
            return False
        if not self._direct(st):
            await queue()
            return False
        h = self.health[st.url]
        h.began()  # (until it is taken, or failed and queued: `caught_up` never counts it as holding it)
        try:
            await self._bounded(st, write, took)
            took.set()
        except StaleHead as exc:
            self._ok(st)
            return exc
        except ReadOnlyStore:
            h.read_only = True
            return False
        except FAILURES as exc:
            self._failed(st, exc)
            await queue()
            return False
        finally:
            h.ended()
        self._ok(st)
        return True

    async def _bounded(self, st: Store, write: Callable[[], Awaitable[object]], took: asyncio.Event) -> None:
        """`write()` to `st`, given the mirror's whole timeout while no store has taken the write, but only
        `lag` seconds more once another has: a store that hangs (rather than refusing) would otherwise hold
        every push for the whole timeout, and the followers reading the stores that answered would see the
        change that much later. It is then failed as any store that does not answer (backoff), and what it
        missed goes to its outbox."""
        task = asyncio.ensure_future(write())
        other = asyncio.ensure_future(took.wait())
        try:
            await asyncio.wait([task, other], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            raise
        finally:
            other.cancel()
        if task.done():
            task.result()
            return
        try:
            await asyncio.wait_for(task, self.lag)
        except TimeoutError:
            raise StoreTimeout(
                f"{shown_url(st.url)}: no answer {self.lag:g} s after another store of the mirror took the write; it is"
                f" sent to this one from its outbox"
            ) from None

    async def _put_to(self, st: Store, items: list[tuple[bytes, bytes]], took: asyncio.Event) -> bool | StaleHead:
        return await self._write_to(
            st,
            lambda: st.put_many([d for _, d in items], [h for h, _ in items], timeout=self.timeout),
            lambda: self._queue_objects(st, items),
            took,
        )

    async def put_many(
        self, items: list[bytes], hashes: Sequence[bytes | None] | None = None, *, timeout: float | None = None
    ) -> list[bytes]:
        """Put to every store (or its outbox); each store's writes are bounded by the mirror's own
        timeout, so `timeout` is not used."""
        hs = [h if h is not None else digest(d) for h, d in zip(hashes or [None] * len(items), items)]
        pairs = list(zip(hs, items))
        first = asyncio.Event()
        took = await asyncio.gather(*(self._put_to(s, pairs, first) for s in self.stores))
        if not any(t is True for t in took):
            raise self._none_took("objects")
        return hs

    async def put(self, data: bytes) -> bytes:
        return (await self.put_many([data]))[0]

    def _none_took(self, what: str) -> StoreError:
        """The failure of a write no store took: RateLimited (with the shortest of their waits) when every
        store that can be written asked to be left alone for a while (Retry-After), so that the push is
        retried then and not before; else a StoreError naming each store's last error."""
        why = "; ".join(f"{u}: {h.last_error or 'catching up'}" for u, h in self.health.items())
        msg = f"no store of the mirror took the {what} ({why}); they are kept for each store and sent when it answers"
        writable = [h for h in self.health.values() if not h.read_only]
        waits = [h.retry_at - time.monotonic() for h in writable if h.server_wait is not None]
        if writable and len(waits) == len(writable):
            return RateLimited(msg, max(0.0, min(waits)))
        return StoreError(msg)

    async def _head_to(self, st: Store, entry: RegistryEntry, took: asyncio.Event) -> bool | StaleHead:
        return await self._write_to(
            st,
            lambda: bounded(st.set_head(entry), self.timeout),
            lambda: self._queue_head(st, entry),
            took,
        )

    async def set_head(self, entry: RegistryEntry) -> None:
        """Published to every store (or its outbox). StaleHead when any store holds an equal or higher
        revision: the caller reads the head (the highest among them) and decides, as with one store."""
        first = asyncio.Event()
        results = await asyncio.gather(*(self._head_to(s, entry, first) for s in self.stores))
        stale = next((r for r in results if isinstance(r, StaleHead)), None)
        if stale is not None:
            raise stale
        if not any(r is True for r in results):
            raise self._none_took("head")

    @property
    def heads_expire(self) -> bool:
        return any(st.heads_expire for st in self.stores)

    async def refresh_head(self, key: SigningKey, *, margin: dt.timedelta) -> bool | None:
        """Each store whose heads expire republishes its record if due (a failure: the next round's).
        None if one of them holds no valid record of it: the caller writes the head anew (to them all)."""
        done, gone = False, False
        for st in self.stores:
            if st.heads_expire and self._usable(st):
                try:
                    did = await bounded(st.refresh_head(key, margin=margin), self.timeout)
                except FAILURES as exc:
                    log.warning("could not republish a head on %s: %s", st.url, exc)
                    continue
                done |= bool(did)
                gone |= did is None
        return None if gone else done

    def take_records(self) -> dict[bytes, tuple[bytes, bool]]:
        """The records its stores handed (one of a head per store, read or put: the first put, else the first)."""
        out: dict[bytes, tuple[bytes, bool]] = {}
        for st in self.stores:
            for pk, (record, put) in st.take_records().items():
                if pk not in out or (put and not out[pk][1]):
                    out[pk] = (record, put)
        return out

    async def put_record(self, pk: bytes, record: bytes) -> bool:
        """Put on each of its stores that forgets records (one that fails: the next round's)."""
        took = False
        for st in self.stores:
            if st.heads_expire and self._usable(st):
                try:
                    took |= await bounded(st.put_record(pk, record), self.timeout)
                except FAILURES as exc:
                    log.warning("could not put a head's record again on %s: %s", st.url, exc)
        return took

    async def keep_wanted(self) -> None:
        for st in self.stores:
            await st.keep_wanted()  # (local state only: no request, nothing to wait out)

    async def unpin(self, hashes: list[bytes]) -> None:
        for st in self.stores:
            if self._usable(st):
                try:
                    await bounded(st.unpin(hashes), self.timeout)
                except FAILURES as exc:
                    log.warning("could not unpin on %s: %s", st.url, exc)

    # ------------------------------------------------------------------ reads
    async def get(self, h: bytes) -> bytes:
        return await self._get(h, None)

    async def get_capped(self, h: bytes, limit: int, what: str = "an object") -> bytes:
        return await self._get(h, (limit, what))

    async def _get(self, h: bytes, cap: tuple[int, str] | None) -> bytes:
        """get(h) from the first store that has it; with `cap`, each store's get_capped(h, *cap)."""
        last: BaseException | None = None
        missing: ObjectMissing | None = None
        failed: list[tuple[BaseException, str]] = []
        for st in self._ordered():
            try:
                read = st.get(h) if cap is None else st.get_capped(h, *cap)
                data = await bounded(read, self.timeout)
            except ObjectMissing as exc:
                missing = exc
                continue
            except FAILURES as exc:  # down, or damaged bytes (CorruptObject): the next store may have it
                last = exc
                failed.append((exc, st.url))
                if not isinstance(exc, CorruptObject):
                    self._failed(st, exc)
                else:
                    log.warning("mirror store gave damaged bytes: %s", exc, extra={"store": st.url})
                continue
            self._ok(st)
            note_object(h)
            return data
        if missing is not None and last is None:
            raise missing
        err = last or missing
        assert err is not None  # a mirror has two stores or more, and each failed
        raise MirrorFailed(f"no store of the mirror could give object {h.hex()}: {describe_error(err)}", failed)

    async def has(self, h: bytes) -> bool:
        last: BaseException | None = None
        failed: list[tuple[BaseException, str]] = []
        for st in self._ordered():
            try:
                if await bounded(st.has(h), self.timeout):
                    return True
            except FAILURES as exc:
                last = exc
                failed.append((exc, st.url))
                self._failed(st, exc)
        if last is not None and all(self.health[s.url].reachable is False for s in self.stores):
            raise MirrorFailed(f"no store of the mirror answered: {describe_error(last)}", failed)
        return False

    async def get_head(self, pk: bytes) -> RegistryEntry | None:
        """The highest valid revision among the stores that answer (each verifies its entry)."""
        asked = [s for s in self.stores if self._usable(s)] or list(self.stores)

        async def one(st: Store) -> RegistryEntry | BaseException | None:
            try:
                entry = await bounded(st.get_head(pk), self.timeout)
            except FAILURES as exc:
                self._failed(st, exc)
                return exc
            self._ok(st)
            return entry

        results = await asyncio.gather(*(one(s) for s in asked))
        entries = [r for r in results if isinstance(r, RegistryEntry)]
        if entries:
            # of two entries of one revision (two devices wrote a members slot's same revision to the stores
            # apart, one store down for one of them), the same one on every device, whatever its stores' order:
            # the device the other lists alone finds itself unlisted, and writes itself back (sync/follower.py)
            best = highest(entries)
            note_head(best)
            note_apart(self, pk, asked, results)  # (the stores holding different entries: a follower checks it)
            return best
        errors = [r for r in results if isinstance(r, BaseException)]
        if len(errors) == len(results):
            raise MirrorFailed(
                f"no store of the mirror answered for a head: {describe_error(errors[0])}",
                [(r, st.url) for r, st in zip(results, asked) if isinstance(r, BaseException)],
            )
        return None

    async def head_versions(self) -> dict[bytes, object] | None:
        """Every head's versions in all the stores, when each can tell cheaply; else None."""
        per = []
        for st in self.stores:
            if not self._usable(st):
                return None
            try:
                v = await bounded(st.head_versions(), self.timeout)
            except FAILURES as exc:
                self._failed(st, exc)
                return None
            if v is None:
                return None
            per.append(v)
        keys = set().union(*per)
        return {k: tuple(v.get(k) for v in per) for k in keys}
