"""A mirror's drain (sync/mirror.py): the background task that sends what waits in each store's outbox
once the store answers again, oldest first (objects before the heads that name them), and asks a store
that is down, with nothing waiting for it, whether it is back. A failure backs the store off (the
mirror's `failed`, given to the Drain); the loop never dies of one. Each store's `Health`, which the mirror
and its drain share, is sync/mirrorhealth.py's."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..storage.errors import crash_at
from ..storage.outbox import HEAD, Outbox
from ..stores import StaleHead, Store, StoreError
from ..stores.bounded import bounded
from ..stores.registry import RegistryEntry, RegistryError
from .mirrorhealth import Health
from .outboxrows import HeadKey, adopt_renamed, unsendable, with_key

log = logging.getLogger("sessiond.sync")

# what a store of a mirror fails with when it is down (or answers what does not verify)
FAILURES = (StoreError, RegistryError, TimeoutError, OSError)


class Drain:
    """A mirror's drain: the loop (run as the mirror's task) and what it and the mirror's writes share:
    `counted` (the outboxes counted at start: until then every write is queued, behind what waits),
    `ready` (set then), `closed`, and `wake()` (a write was queued)."""

    def __init__(
        self,
        stores: list[Store],
        outbox: Outbox,
        health: dict[str, Health],
        *,
        timeout: float,
        head_key: HeadKey | None,
        ok: Callable[[Store], None],
        failed: Callable[[Store, BaseException], None],
    ):
        self.stores, self.outbox, self.health = stores, outbox, health
        self.timeout, self.head_key = timeout, head_key
        self.ok, self.failed = ok, failed
        self.counted = False
        self.closed = False
        self.ready = asyncio.Event()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def loop(self) -> None:
        """Until closed: the outboxes counted first (rows an earlier version queued under another name of a
        store given to it), then each store with rows waiting sent them."""
        counts = await adopt_renamed(self.outbox, [s.url for s in self.stores], await self.outbox.counts())
        for url, h in self.health.items():
            h.pending = counts.get(url, 0)
        self.counted = True
        self.ready.set()
        while not self.closed:
            waits = []
            for st in self.stores:
                h = self.health[st.url]
                if not h.pending and h.reachable is not False:
                    continue
                if h.reachable is False and time.monotonic() < h.retry_at:
                    waits.append(h.retry_at - time.monotonic())
                    continue
                try:
                    if h.pending:
                        await self.drain(st)
                    else:  # down, nothing waiting for it: is it back?
                        await bounded(st.has(bytes(32)), self.timeout)
                        h.catch_ups += 1
                        self.ok(st)
                except asyncio.CancelledError:
                    raise
                except FAILURES as exc:
                    self.failed(st, exc)
                    waits.append(h.retry_at - time.monotonic())
                except Exception as exc:  # never let the loop die (nor spin): back off as for a failure
                    log.exception("mirror drain failed", extra={"store": st.url})
                    self.failed(st, exc)
                    waits.append(h.retry_at - time.monotonic())
            self._wake.clear()
            if any(h.pending and h.reachable is not False for h in self.health.values()):
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.05, min(waits, default=5.0)))
            except TimeoutError:
                pass

    async def drain(self, st: Store) -> None:
        """Send what waits for `st`, oldest first, until its outbox is empty (or it fails)."""
        h = self.health[st.url]
        while not self.closed:
            added = h.added
            rows = await self.outbox.first(st.url)
            if not rows:
                if h.added != added:  # a write was queued while the outbox was read: read it again
                    continue
                h.pending = 0
                h.catch_ups += 1
                self.ok(st)
                log.info("mirror store caught up", extra={"store": st.url})
                return
            done: list[int] = []
            try:
                for rid, kind, _key, data in rows:
                    if kind == HEAD:
                        entry = RegistryEntry.from_bytes(data)
                        if st.signs_heads:  # (only such a store needs the key: looking it up may read every session)
                            entry = await with_key(entry, self.head_key)
                            if entry.signing_key is None:
                                unsendable(st)  # (and it must not hold up the rows after it)
                                done.append(rid)
                                continue
                        try:
                            await bounded(st.set_head(entry), self.timeout)
                        except StaleHead:
                            pass  # it holds this revision or a newer one: nothing to catch up
                    else:
                        await bounded(st.put(data), self.timeout)
                    done.append(rid)
                crash_at("outbox:sent")  # (tests: killed with the rows sent, not yet deleted from the outbox)
            finally:
                await self.outbox.done(done)
                h.pending = max(0, h.pending - len(done))
            self.ok(st)
