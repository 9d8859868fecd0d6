"""A mirror's drain (sync/mirror.py): the background task that sends what waits in each store's outbox
once the store answers again, oldest first (objects before the heads that name them), and asks a store
that is down, with nothing waiting for it, whether it is back. A failure backs the store off
(MirrorStore._failed); the loop never dies of one."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ..storage.outbox import HEAD
from ..stores import StaleHead, Store, StoreError
from ..stores.registry import RegistryEntry, RegistryError
from .outboxrows import adopt_renamed, unsendable, with_key

if TYPE_CHECKING:
    from .mirror import MirrorStore

log = logging.getLogger("sessiond.sync")

# what a store of a mirror fails with when it is down (or answers what does not verify)
FAILURES = (StoreError, RegistryError, TimeoutError, OSError)


async def drain_loop(m: MirrorStore) -> None:
    """The drain of mirror `m`, until it is closed: the outboxes counted first (rows an earlier version
    queued under another name of a store given to it), then each store with rows waiting sent them."""
    counts = await adopt_renamed(m.outbox, [s.url for s in m.stores], await m.outbox.counts())
    for url, h in m.health.items():
        h.pending = counts.get(url, 0)
    m._counted = True
    m._ready.set()
    while not m._closed:
        waits = []
        for st in m.stores:
            h = m.health[st.url]
            if not h.pending and h.reachable is not False:
                continue
            if h.reachable is False and time.monotonic() < h.retry_at:
                waits.append(h.retry_at - time.monotonic())
                continue
            try:
                if h.pending:
                    await drain(m, st)
                else:  # down, nothing waiting for it: is it back?
                    await asyncio.wait_for(st.has(bytes(32)), m.timeout)
                    m._ok(st)
            except asyncio.CancelledError:
                raise
            except FAILURES as exc:
                m._failed(st, exc)
                waits.append(h.retry_at - time.monotonic())
            except Exception as exc:  # never let the loop die (nor spin): back off as for a failure
                log.exception("mirror drain failed", extra={"store": st.url})
                m._failed(st, exc)
                waits.append(h.retry_at - time.monotonic())
        m._wake.clear()
        if any(h.pending and h.reachable is not False for h in m.health.values()):
            continue
        try:
            await asyncio.wait_for(m._wake.wait(), max(0.05, min(waits, default=5.0)))
        except TimeoutError:
            pass


async def drain(m: MirrorStore, st: Store) -> None:
    """Send what waits for `st`, oldest first, until its outbox is empty (or it fails)."""
    h = m.health[st.url]
    while not m._closed:
        added = h.added
        rows = await m.outbox.first(st.url)
        if not rows:
            if h.added != added:  # a write was queued while the outbox was read: read it again
                continue
            h.pending = 0
            m._ok(st)
            log.info("mirror store caught up", extra={"store": st.url})
            return
        done: list[int] = []
        try:
            for rid, kind, _key, data in rows:
                if kind == HEAD:
                    entry = RegistryEntry.from_bytes(data)
                    if st.signs_heads:  # (only such a store needs the key: looking it up may read every session)
                        entry = await with_key(entry, m.head_key)
                        if entry.signing_key is None:
                            unsendable(st)  # (and it must not hold up the rows after it)
                            done.append(rid)
                            continue
                    try:
                        await asyncio.wait_for(st.set_head(entry), m.timeout)
                    except StaleHead:
                        pass  # it holds this revision or a newer one: nothing to catch up
                else:
                    await asyncio.wait_for(st.put(data), m.timeout)
                done.append(rid)
        finally:
            await m.outbox.done(done)
            h.pending = max(0, h.pending - len(done))
        m._ok(st)
