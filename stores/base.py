"""Content-addressed object stores with signed mutable heads.

`Store` is the one interface every backend implements. Objects are addressed by the BLAKE3 digest of
their bytes; heads are S5 registry entries addressed by their public key. Every read verifies: an
object whose bytes do not hash to the requested digest, or a head whose signature does not verify,
raises `CorruptObject`/`RegistryError` and is never returned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from nacl.signing import SigningKey

from .cid import digest
from .registry import RegistryEntry

MAX_OBJECT_SIZE = 1 << 20  # every stored object is at most 1 MiB (so it is also a valid raw IPFS block)
PUT_CONCURRENCY = 4  # Store.put_many's default: at most this many put() calls in flight
# a network store's cap on its polled requests (head reads), a second (stores/http.py's RateCap); here, not in
# http.py, so that what reads the default (stores/config.py, and so the CLI) does not import aiohttp
DEFAULT_MAX_REQUESTS_PER_SECOND = 20.0


class StoreError(Exception):
    """The store could not do what was asked (down, refused, timed out)."""


class ObjectMissing(StoreError):
    def __init__(self, h: bytes):
        super().__init__(f"object {h.hex()} is missing from the store")
        self.hash = h


class CorruptObject(StoreError):
    def __init__(self, h: bytes, why: str):
        super().__init__(f"object {h.hex()} is damaged: {why}")
        self.hash = h


class Oversized(CorruptObject):
    """An object larger than its reader takes (Store.get_capped): refused as damage, unread where the store
    can tell its size first. `what` names the kind of object as the refusal says it ("a members object")."""

    def __init__(self, h: bytes, size: int | None, limit: int, what: str = "an object"):
        had = f"{size:,} bytes" if size is not None else "more bytes"
        super().__init__(h, f"it is {had}, more than the {_bytes(limit)} {what} may be (not read)")
        self.size, self.limit = size, limit


def _bytes(n: int) -> str:
    return f"{n >> 20} MiB" if n % (1 << 20) == 0 else f"{n >> 10} KiB" if n % 1024 == 0 else f"{n:,} bytes"


class StaleHead(StoreError):
    """A head was offered with a revision not higher than the one the store holds."""


class HeadExpired(StoreError):
    """The store answered a head whose validity has ended (an IPNS record past its end of life): it is
    no longer a head anyone may follow, until the device that signs it publishes it again."""


class CannotDelete(StoreError):
    """This store offers no way to free an object (a read-only gateway, a portal without deletes)."""


@dataclass
class Freed:
    """What Store.free did (or, dry, would do): `how` it frees ("deleted": the bytes are gone now;
    "unpinned": released, the node or service drops them at its own garbage collection), how many of
    the objects it held, their size in bytes (`nbytes`) where it can tell, and `gone`: the hashes it no longer holds for
    this device (freed now, or not held at all), which the caller need not ask about again."""

    how: str
    objects: int = 0
    nbytes: int = 0
    gone: list[bytes] = field(default_factory=list)


class Store(ABC):
    url: str
    read_only = False  # a store that only reads (a gateway): put and set_head always refuse
    # a store that signs each head again in a format of its own (Kubo: an IPNS record), so set_head needs
    # the entry's signing key, which an entry read back from bytes (a mirror's outbox) does not carry
    signs_heads = False

    def server_clock(self) -> tuple[float, float] | None:
        """The store's clock as of its last answer: (its time, this machine's time when the answer came),
        from an HTTP store's Date header; None for a store that reports no time (a folder)."""
        http = getattr(self, "http", None)  # the network stores' HttpClient (stores/http.py)
        return getattr(http, "last_date", None)

    @abstractmethod
    async def put(self, data: bytes) -> bytes:
        """Store `data`; return its BLAKE3 digest. Idempotent."""

    @abstractmethod
    async def get(self, h: bytes) -> bytes:
        """Return the bytes whose digest is `h`, verified; ObjectMissing or CorruptObject otherwise."""

    async def get_capped(self, h: bytes, limit: int, what: str = "an object") -> bytes:
        """get(h), refused (Oversized) if the object is larger than `limit` bytes: for objects of a kind with a
        cap of its own (a members list), which any writer of the session can make as large as it likes. A
        store that can tell an object's size before reading it (a folder) refuses it unread; here, the
        network stores' bodies are bounded by their max_body (MAX_OBJECT_SIZE and a little) already."""
        data = await self.get(h)
        if len(data) > limit:
            raise Oversized(h, len(data), limit, what)
        return data

    @abstractmethod
    async def has(self, h: bytes) -> bool: ...

    async def first_missing(self, hashes: Sequence[bytes], *, timeout: float | None = None) -> bytes | None:
        """The first of `hashes` the store does not hold, or None if it holds them all (a check that a
        log is whole, reading no object). `timeout` bounds each question. This default asks has() for
        each in turn; a store that can answer for many at once (a folder: one thread hop) overrides it."""
        for h in hashes:
            if not await (self.has(h) if timeout is None else asyncio.wait_for(self.has(h), timeout)):
                return h
        return None

    @abstractmethod
    async def get_head(self, pk: bytes) -> RegistryEntry | None:
        """The newest verified registry entry for `pk` (0xed | key), or None."""

    @abstractmethod
    async def set_head(self, entry: RegistryEntry) -> None:
        """Publish `entry`; StaleHead if the store already holds an equal or higher revision."""

    @property
    def heads_expire(self) -> bool:
        """Whether a head here stops being valid unless published again (refresh_head): a store that signs
        heads in a format with an end of life (Kubo); a mirror or a wrapper, if a store of it does."""
        return self.signs_heads

    async def refresh_head(self, key: SigningKey, *, margin: dt.timedelta) -> bool | None:
        """Publish again the head signed by `key` if what the store holds of it stops being valid within
        `margin`; whether it did, or None if the store holds no valid head of it (none, or one that has
        expired, which Kubo answers as none): nothing is left to publish again, and the caller writes the
        head anew from its own state. Only a store whose heads expire (Kubo: an IPNS record has an end of
        life) does anything: a registry entry never expires, so by default nothing is read or written."""
        return False

    def take_records(self) -> dict[bytes, tuple[bytes, bool]]:
        """The signed head records this store put or read since the last call, by head key (0xed | key):
        (record, whether this device put it). Only a store whose network forgets a record some time after
        it was put, whatever its validity (Kubo's DHT), hands any: the caller keeps them and gives them
        back to put_record before that time (sync/reput.py)."""
        return {}

    async def put_record(self, pk: bytes, record: bytes) -> bool:
        """Put again, unchanged, a signed head record this store handed (take_records): anyone may put a
        valid record, and the network counts its age from then. Whether the store took it (False: it holds
        a newer record of the head, or does not forget records)."""
        return False

    async def put_many(
        self, items: list[bytes], hashes: Sequence[bytes | None] | None = None, *, timeout: float | None = None
    ) -> list[bytes]:
        """Store several objects; return their digests in order. `hashes`, if given, are the objects'
        BLAKE3 hashes computed by the caller in this process (sealing hashes every ciphertext anyway): a
        store that can use them trusts them, others ignore them. `timeout` (seconds) bounds each
        object's write (asyncio.TimeoutError past it); a store that writes a batch at once bounds the
        batch by it. This default calls put() for each, at most PUT_CONCURRENCY at a time; the first
        failure cancels the others and is raised. A store with a faster batch (a folder) overrides it."""

        async def one(data: bytes) -> bytes:
            return await (self.put(data) if timeout is None else asyncio.wait_for(self.put(data), timeout))

        if len(items) <= 1:  # the common case (a page is one object): no tasks
            return [await one(d) for d in items]
        out: list[bytes] = [b""] * len(items)
        todo = iter(enumerate(items))

        async def worker() -> None:
            for i, data in todo:  # the shared iterator hands each object to one worker
                out[i] = await one(data)

        tasks = [asyncio.ensure_future(worker()) for _ in range(min(PUT_CONCURRENCY, len(items)))]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks)  # nothing left writing once this returns
            raise
        return out

    async def put_then_set_head(
        self,
        items: list[bytes],
        hashes: Sequence[bytes | None] | None,
        entry: RegistryEntry,
        *,
        timeout: float | None = None,
    ) -> list[bytes]:
        """Store objects, then publish a head that may name them: put_many, then set_head once every
        object is stored (nothing of the head if one failed). Returns the objects' digests. A store that
        does both in one go (a folder: one batch of its writer) overrides it. `timeout` bounds each step."""
        out = await self.put_many(items, hashes, timeout=timeout)
        await (self.set_head(entry) if timeout is None else asyncio.wait_for(self.set_head(entry), timeout))
        return out

    async def close(self) -> None:
        return None

    def fail_rate_limits_at_once(self) -> None:
        """From now on a 429/503's Retry-After is not waited for inside a request (stores/http.py): RateLimited
        at once, with the store's wait. For a holder that waits for it elsewhere, and meanwhile goes on (a
        mirror: its other stores take the writes, its drain sends this one what it missed once the wait is
        over). No-op for a store that is no HTTP one."""
        return None

    async def keep_wanted(self) -> None:
        """Make durable what the store holds in memory only about the objects put through it so far (a
        pinning service's CIDs waiting for their pins, sent with the next head): a push calls it before it
        records the revision that names them, as a push resumed after a crash publishes that revision's
        manifest and head alone, putting none of its pages again. Most stores hold nothing such: no-op."""
        return None

    async def failing_now(self) -> StoreError | None:
        """What the store's own state says is wrong now, found without a request to it (a folder store's
        folder missing, empty, or not made yet: stores/filelayout.py), as its writes fail; None if nothing
        (all other stores: only a request tells)."""
        return None

    def service_status(self) -> dict[str, object]:
        """What GET /v1/status shows of a service beside the store: a pinning service's state (`pinning`,
        stores/pinning.py); others nothing."""
        return {}

    def write_stats(self) -> dict[str, int]:
        """What GET /v1/status shows of this store's writes: a folder store the objects and heads its
        batched writer wrote (`writes`) and in how many batches (`write_batches`), and how its follower
        looked for changed heads (`head_listings`, `journal_records`); others nothing."""
        return {}

    def put_in_background(self, data: bytes | list[bytes], h: bytes | None = None) -> concurrent.futures.Future | None:
        """Start storing `data` (an object's bytes, or its pieces in order: a sealed page's chunks, written
        without joining them) on the store's own threads and return the write's future (its result:
        the hash), from any thread; `h` as in put_many. A store whose writes are local file work offers
        this, so that a push's worker threads write without a hop through the event loop per object.
        Other stores return None: write through put() on the event loop."""
        return None

    async def head_versions(self) -> dict[bytes, object] | None:
        """For every head in the store, something that changes whenever that head changes; or None if
        the store cannot tell cheaply (then followers check every head they follow on each poll)."""
        return None

    async def head_changes(self, since: object | None) -> tuple[object, set[bytes] | None] | None:
        """The heads that changed since the token `since` (None: the first call) as (the token for the
        next call, their pks), in time proportional to the change, not to the number of heads; the pks
        are None when the store cannot tell this time (a first call, a feed that restarted): look at
        everything. None if the store has no such feed (then use head_versions)."""
        return None

    async def head_revisions(self) -> dict[bytes, int] | None:
        """Each head's revision as the store's change feed last named it (after head_changes said it cannot
        tell: a relay's reset names every head the account follows, with its revision), in no request. A
        hint: a follower need not read a head named at the revision it holds, and reads the others (those
        named at another revision, those not named). None when the store cannot say: read every head."""
        return None

    async def get_heads(
        self, pks: list[bytes], *, concurrency: int = 4
    ) -> dict[bytes, RegistryEntry | StoreError | None]:
        """Read many heads (a follower's poll round where the store has no change feed): each pk maps
        to its newest verified entry, None if it has none, or the StoreError that reading it raised
        (one failing head does not hide the others). At most `concurrency` reads are in flight; a
        network store's request-rate cap (stores/http.py) spaces them further, so a round over N
        heads takes about N / max_requests_per_second seconds and never floods the server."""
        out: dict[bytes, RegistryEntry | StoreError | None] = {}
        if not pks:
            return out
        todo = iter(dict.fromkeys(pks))  # each head once, in order

        async def worker() -> None:
            for pk in todo:  # the shared iterator hands each pk to one worker
                try:
                    out[pk] = await self.get_head(pk)
                except StoreError as exc:
                    out[pk] = exc

        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(pks))))))
        return {pk: out[pk] for pk in dict.fromkeys(pks)}

    async def unpin(self, hashes: list[bytes]) -> None:
        """(Not named `release`: test doubles of stores use that name for an Event.) The log no longer
        references these objects: a store that keeps objects alive on purpose (a Kubo node's pins, a
        pinning service's pin requests) lets them go; others keep them (a folder or portal keeps what it
        holds; collecting it is not this call's business). Idempotent: releasing an object not held, or
        twice, is no error."""
        return None

    async def free(self, hashes: list[bytes], *, dry_run: bool = False) -> Freed:
        """Free these objects of this device's logs, which nothing references any more (`sessiond gc`
        decides that; this call only frees). A store frees only what this device may free: a relay or
        portal only this account's uploads. `dry_run`: count, change nothing. CannotDelete where the
        store offers no way (the default)."""
        raise CannotDelete(f"the store {self.url} offers no way to free objects")


def check_object(h: bytes, data: bytes) -> bytes:
    if digest(data) != h:
        raise CorruptObject(h, "its bytes do not match its BLAKE3 hash")
    return data
