"""Keeping readable, on a store whose network forgets records (Kubo), the heads this device publishes and
those it follows, whatever their own validity.

Kubo's DHT drops a record 48 h after it was put (go-libp2p-kad-dht amino.DefaultMaxRecordAge; 36 h in
older versions), however long the record is valid, and Kubo's own republisher puts again only the
records of keys in its keystore: not the IPNS records sessiond signs with its heads' keys and puts with
`routing/put`. So a head vanished two days after its writer's last push; and a writer that went away
for two days left the devices following it nothing to read. Anyone may put a valid record again (the
IPNS spec, "Record Republishing"), and the DHT takes the same bytes again and counts their age from
then (go-libp2p-kad-dht routing.go PutValue).

So each record a store hands (Store.take_records: one put by this device, or read from it) is kept in
the database (`kept_records`, the best seen of each head) within KEEP_EVERY seconds, and at a clean stop,
with when this device last put it (a record read counts from when it was read: its writer put it no
later). What was taken from the stores is held here until it is saved: a save cut short (the stop
cancels the keeper, or a write fails) leaves it for the next save, which the stop makes once nothing
that hands records runs any more. Every `every` seconds
(SESSIOND_IPNS_REPUT_EVERY, 12 h by default: well inside the DHT's 48 h) the kept record of each head a
session here publishes or follows on such a store (its own log's head, its members slot, the log heads
of the other devices it follows) is put again, unchanged. A record past its end of life is not (no node
takes it): its signer writes a new one (republish.py). The records of heads no session follows any more
are forgotten (a deleted session's already in its delete, storage/keptrecords.py; these rounds catch one
a store handed after it).
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..storage.clock import wall, wall_utc
from ..stores import Store, ipns
from ..stores.bounded import bounded
from .context import SyncContext

log = logging.getLogger("sessiond.sync")

REPUT_ENV = "SESSIOND_IPNS_REPUT_EVERY"
DEFAULT_EVERY = 12 * 3600.0  # seconds between two puts of a record (the DHT forgets it after 48 h)
MAX_TICK = 600.0  # seconds between two looks at what is due, at most
# seconds between two keepings of the records the stores handed (a push's), while a store forgets records: a
# record kept only in memory is lost to a kill -9, and its head forgotten by the DHT 48 h after the push
KEEP_EVERY = 1.0


def reput_every() -> float:
    """DEFAULT_EVERY, or SESSIOND_IPNS_REPUT_EVERY seconds (tests: a stand-in that forgets in seconds)."""
    seconds = ipns.env_seconds(REPUT_ENV)
    return DEFAULT_EVERY if seconds is None else seconds


class RecordKeeper:
    def __init__(self, ctx: SyncContext, *, every: float | None = None):
        self.ctx = ctx
        self.every = every if every is not None else reput_every()
        self.tick = min(self.every / 4, MAX_TICK)
        # what the stores handed and no save has finished keeping yet (a save cancelled by the stop, or
        # failed): saved again by the next collect; saving a record kept already changes nothing
        self._unsaved: list[dict[bytes, tuple[bytes, bool]]] = []

    async def run(self) -> None:
        """The background loop (Syncer.start): a round every `tick`; and, while a store forgets records,
        what the stores handed kept every KEEP_EVERY (a record only in memory is lost to a kill -9)."""
        next_round = 0.0
        while not self.ctx.stopping:
            try:
                if time.monotonic() >= next_round:
                    next_round = time.monotonic() + self.tick
                    done = await self.round()
                    if done:
                        log.info("heads' records put again before the DHT forgets them", extra={"objects": done})
                else:
                    await self.collect()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad round stop the loop: the next one tries again
                log.exception("putting heads' records again failed")
            forgets = any(st.heads_expire for st in self._stores())
            await asyncio.sleep(max(0.0, min(next_round - time.monotonic(), KEEP_EVERY if forgets else self.tick)))

    def _stores(self) -> list[Store]:
        return [self.ctx.store, *self.ctx.stores.values()]

    async def collect(self) -> None:
        """Keep the records the stores handed: of each head, the best (as the IPNS validator selects).
        Also called as the sync engine stops, so that a clean stop loses none: those an earlier call took
        and did not finish saving too."""
        self._unsaved += [rec for st in self._stores() if (rec := st.take_records())]
        if not self._unsaved:
            return
        await self._save(self._unsaved)
        self._unsaved = []

    async def _save(self, handed: list[dict[bytes, tuple[bytes, bool]]]) -> None:
        kept = self.ctx.db.kept_records
        rows = await kept.all()
        now = wall()
        for records in handed:
            for pk, (record, put) in records.items():
                old = rows.get(pk)
                if old is not None and old[0] == record:
                    if put:
                        await kept.put_at(pk, record, now)
                    continue
                new_rank = ipns.rank(record, pk)
                old_rank = ipns.rank(old[0], pk) if old is not None else None
                if new_rank is None or (old_rank is not None and old_rank >= new_rank):
                    continue  # an older record (a node rolled back), or one that does not verify
                await kept.keep(pk, record, now)
                rows[pk] = (record, now)

    async def _followed(self) -> dict[bytes, Store]:
        """Each head a session here publishes or follows on a store whose heads expire, with that store."""
        ctx = self.ctx
        out: dict[bytes, Store] = {}
        if not ctx.store.heads_expire and not await ctx.db.remote_store_urls():
            return out  # no session here on such a store: not a walk over all of them every tick
        for sid in await ctx.db.session_ids(hidden=True):
            store = await ctx.store_for(sid)
            if not store.heads_expire:
                continue
            out[b"\xed" + bytes(ctx.keys.head_key(sid).verify_key)] = store
            remote = await ctx.db.remote(sid)
            if remote:
                out[b"\xed" + bytes(remote["announce_pk"])] = store  # its members slot
                for peer in await ctx.db.peers(sid):
                    out[bytes(peer["head_pk"])] = store
        return out

    async def round(self) -> int:
        """Keep what the stores handed, then put again each followed record whose last put is `every`
        old; how many the stores took. A store that fails is logged and tried again at the next round."""
        ctx = self.ctx
        await self.collect()
        followed = await self._followed()
        rows = await ctx.db.kept_records.all()
        await ctx.db.kept_records.drop(pk for pk in rows if pk not in followed)
        done = 0
        for pk, store in followed.items():
            row = rows.get(pk)
            if ctx.stopping:
                break
            # (a last put after now: the clock was stepped back since, and waiting for it to come round again
            # would leave the record to the DHT's 48 h for as long as the step: it is put again now)
            if row is None or 0 <= wall() - row[1] < self.every:
                continue
            record = row[0]
            held = ipns.rank(record, pk)
            if held is None or held[1] <= wall_utc():
                continue  # past its end of life: no node takes it; its signer writes a new one
            try:
                took = await bounded(store.put_record(pk, record), ctx.timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("could not put a head's record again: %s", exc, extra={"store": store.url})
                continue
            # taken; or the node holds a newer record, which the next read hands (and is kept then)
            await ctx.db.kept_records.put_at(pk, record, wall())
            done += took
        return done
