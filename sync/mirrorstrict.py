"""A mirror's stores all at once, for a rekey's notice (sync/rekey.py): what no store may take apart from the others.

A mirror (sync/mirror.py) takes a write once one of its stores has, the others' left to their outboxes, and reads a
head as the highest among the stores that answer. For a rekey's notice that is not enough: two devices rekeying the
same session at once, each reaching another store of the mirror (a partition, or stores that took the two notices
in crossed order), would each see its notice taken and finish, and the session would split in two generations for
good. Through `EveryStore`, a head is read from every store (each must answer: the highest, ranked as the mirror
ranks two entries of one revision) and written straight to every store (each must take it; nothing is queued): a
rekey counts its notice as published only once every store holds it, and writes the slot only over what every store
showed it. A store that does not answer fails the read or write (`NotEveryStore`, naming it) instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ..storage.redact import shown_url
from ..stores import StaleHead, Store
from ..stores.bounded import bounded
from ..stores.cid import digest
from ..stores.errors import ReadOnlyStore, failure_kind
from ..stores.registry import RegistryEntry
from .errors import ImportError_
from .mirror import MirrorFailed, MirrorStore, highest
from .mirrordrain import FAILURES
from .mirrorhealth import describe_error


class NotEveryStore(MirrorFailed):
    """A store of a mirror (or several) that did not answer a read or take a write that needs every store:
    `failures`, each store's own failure and its URL."""


class EveryStore(Store):
    """`mirror` with each store asked for a head and sent a write directly (see the module's docstring). Objects are
    read through the mirror (from whichever store holds them: each verifies what it returns)."""

    def __init__(self, mirror: MirrorStore):
        self.mirror = mirror
        self.url = mirror.url  # (the gc notes of what a slot names are the mirror's: SyncContext.put_to_name)
        self.read: dict[bytes, list[RegistryEntry | None]] = {}  # each written store's head as last read here
        self.read_from: dict[bytes, list[Store]] = {}  # the stores of those heads, in their order

    def _written(self) -> list[Store]:
        """The stores this device writes (a gateway, read-only, takes nothing: it is asked only if it answers)."""
        m = self.mirror
        return [s for s in m.stores if not (s.read_only or m.health[s.url].read_only)]

    async def _each(self, stores: Sequence[Store], call) -> list:
        """`call(store)` on each of `stores` at once, bounded by the mirror's timeout: each one's answer or failure,
        its health noted (a StaleHead is an answer)."""
        m = self.mirror

        async def one(st: Store):
            try:
                out = await bounded(call(st), m.timeout)
            except (StaleHead, ReadOnlyStore) as exc:  # (answers: a gateway takes no write, as in the mirror)
                m._ok(st)
                return exc
            except FAILURES as exc:
                m._failed(st, exc)
                return exc
            m._ok(st)
            return out

        return list(await asyncio.gather(*(one(s) for s in stores)))

    @staticmethod
    def _failed(stores: Sequence[Store], results: list) -> None:
        """NotEveryStore if any of `stores` failed (its result an exception other than StaleHead, an answer)."""
        failures = [(r, s.url) for s, r in zip(stores, results) if isinstance(r, BaseException)]
        failures = [(r, u) for r, u in failures if not isinstance(r, StaleHead)]
        if failures:
            said = [f"the store {shown_url(u)} is {failure_kind(r)} ({describe_error(r)})" for r, u in failures]
            raise NotEveryStore("; ".join(said), failures)

    # ------------------------------------------------------------------ writes: straight to every store
    async def _write(self, call) -> list:
        """`call(store)` on every store this device writes: their answers (a StaleHead among them); NotEveryStore
        if one failed. A store that refuses it as read-only is left out from then on (noted so, as the mirror
        does); ReadOnlyStore if none is left."""
        m = self.mirror
        stores = self._written()
        results = await self._each(stores, call)
        for st, r in zip(stores, results):
            if isinstance(r, ReadOnlyStore):
                m.health[st.url].read_only = True
        kept = [(s, r) for s, r in zip(stores, results) if not isinstance(r, ReadOnlyStore)]
        if not kept:
            raise ReadOnlyStore(f"no store of the mirror {shown_url(m.url)} takes writes")
        self._failed([s for s, _ in kept], [r for _, r in kept])
        return [r for _, r in kept]

    async def put_many(
        self, items: list[bytes], hashes: Sequence[bytes | None] | None = None, *, timeout: float | None = None
    ) -> list[bytes]:
        hs = [h if h is not None else digest(d) for h, d in zip(hashes or [None] * len(items), items)]
        t = self.mirror.timeout
        await self._write(lambda st: st.put_many(items, hs, timeout=t))
        return hs

    async def put(self, data: bytes) -> bytes:
        return (await self.put_many([data]))[0]

    async def set_head(self, entry: RegistryEntry) -> None:
        """Written to every store: StaleHead when any holds an equal or higher revision (once each has answered);
        NotEveryStore when any failed. Either way the others may have taken it."""
        results = await self._write(lambda st: st.set_head(entry))
        stale = next((r for r in results if isinstance(r, StaleHead)), None)
        if stale is not None:
            raise stale

    # ------------------------------------------------------------------ reads
    async def get_head(self, pk: bytes) -> RegistryEntry | None:
        """The highest revision among every store (of two of one revision, the one the mirror reads: MirrorStore
        .get_head). A store this device writes that does not answer fails it (NotEveryStore)."""
        stores = self._written()
        results = await self._each(self.mirror.stores, lambda st: st.get_head(pk))
        written = [r for s, r in zip(self.mirror.stores, results) if s in stores]
        self._failed(stores, written)
        self.read[pk] = list(written)
        self.read_from[pk] = list(stores)
        entries = [r for r in results if isinstance(r, RegistryEntry)]
        return highest(entries) if entries else None

    async def get(self, h: bytes) -> bytes:
        return await self.mirror.get(h)

    async def get_capped(self, h: bytes, limit: int, what: str = "an object") -> bytes:
        return await self.mirror.get_capped(h, limit, what)

    async def has(self, h: bytes) -> bool:
        return await self.mirror.has(h)


def every_store(store: Store) -> Store:
    """`store` with a mirror's stores each asked and written (EveryStore); one store as it is."""
    return EveryStore(store) if isinstance(store, MirrorStore) else store


def held_everywhere(store: Store, pk: bytes) -> bool:
    """Whether every store showed the same head of `pk` at the last read through `store` (always, for one store)."""
    if not isinstance(store, EveryStore):
        return True
    read = store.read.get(pk, [])
    return all(r == read[0] for r in read)


def not_every_store(exc: BaseException) -> NotEveryStore | None:
    """The NotEveryStore under `exc` (raised by EveryStore, or a `store` refusal made of it), if any."""
    if isinstance(exc, NotEveryStore):
        return exc
    if isinstance(exc, ImportError_) and exc.failure is not None and isinstance(exc.failure[0], NotEveryStore):
        return exc.failure[0]
    return None


def rekey_refused(sid: str, failed: NotEveryStore, doing: str, *, pending: bool) -> ImportError_:
    """A rekey of `sid` (`doing`: "rekey", "unshare") through a mirror that a store of it did not answer, as
    the `store` refusal it is (details.stores names each store): `pending`, whether its notice may be out on some
    store already (its record kept: the next pull finishes the rekey, or gives way to another device's), else
    nothing was rekeyed."""
    it = "it answers" if len(failed.failures) == 1 else "they answer"
    if pending:
        then = (
            f"the rekey is not finished, and the old key stays in use until a pull finds every store answering "
            f"(`sessiond sync {sid}` once {it}): it then finishes the rekey, or takes another device's that came first"
        )
    else:
        then = f"nothing was rekeyed (the old key is still in use): try again once {it}"
    err = ImportError_(
        "store",
        f"cannot {doing} {sid}: {failed}. A rekey on a mirror writes its notice to every store of it at once (so that "
        f"two devices rekeying at once cannot both finish); {then}",
    )
    err.failures = list(failed.failures)  # (each store named in details.stores, the top-level fields the last one's)
    err.failure = err.failures[-1]
    return err
