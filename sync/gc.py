"""Freeing store objects this device's logs no longer reference (`sessiond gc`).

The candidates are only what this device recorded letting go (storage/lifecycle.py `Released`: the
manifest a head moved on from, the pages a compaction merged away; and what a push put, noted before its
upload until a recorded revision names it: a push killed in between leaves what its retry does not name; and
a members object or a rekey's notice, noted before its put until the members slot names it: a retry seals it
anew, SyncContext.put_to_name, and gc leaves one being named alone whatever its grace; and such an object once
the slot is seen written over, by this device or another: SyncContext.named, when this device writes the slot
or reads it, here too; and a lost frozen log's manifest this device built again, noted before its put until the
slot names it: another writer that put the log back first leaves it named by nothing, frozenrepair.py),
so an object another device wrote, or one this device cannot account for, is never a candidate. A
candidate is freed once its grace period has passed since it was let go (a follower that read the old
head a moment ago can still fetch it) and no current head of any session this device knows references it:
every head (this device's, each followed device's, the members slot) is read and walked down to its nodes
and parts objects, and so are this device's own logs as a rekey froze them (the members slot's frozen logs: a
writer dropped and let back in; its head left that manifest long ago, and an import reads it: the slot's object,
which names them, is read only when the slot moved since this process last read or wrote it). A session
whose heads cannot all be read and opened keeps its candidates (the round is reported, not guessed).
A session's candidates are freed under its push lock, so no push of it runs in between.
The members slots of sessions deleted here that this device put objects for are read by gc alone (nothing
else here reads them any more), once each: what they no longer name is let go and freed, what they name stays
in the store, and their records go, so that no later gc reads them again. A slot found gone lets go what it
named on a store whose heads do not expire; on one whose heads do (Kubo: a record forgotten or expired reads as
gone, and may be put again) its records stay while what they name is still in the store, read again once a day
(_slot_gone).
A dry run changes nothing: what its reads of the slots would let go is counted, not recorded.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

from ..storage.clock import kept_before, steady
from ..storage.redact import shown_store
from ..storage.testhooks import pause_for_tests
from ..stores import CannotDelete, Freed, Store, StoreError, check_object
from ..stores.bounded import bounded
from ..stores.errors import describe_failure, failing
from ..stores.registry import RegistryEntry, RegistryError
from . import dagcbor
from .bounded import LRU
from .context import SyncContext
from .crypto import DecryptError, open_unpadded
from .errors import crash_point, describe
from .frozen import decode_frozen, merge_frozen, own_log_frozen
from .heads import manifest_hash_of, open_manifest
from .manifest import parse_manifest
from .members import MEMBERS_KEPT, Members
from .membersobject import open_members, parse_members
from .pages import Entry, LogError
from .pull import LogReader

log = logging.getLogger("sessiond.sync")
DEFAULT_GRACE = 24 * 3600.0
# what a dry run's reads of members slots saw, by store URL: an entry read, or the key (0xed | announce key) of a
# deleted session's slot found gone from a store whose heads do not expire (all this device put for it let go)
_Seen = list[tuple[str, RegistryEntry | bytes]]
# how long a deleted session's members slot that read as gone from a store whose heads expire, what it names still
# there, is left unread by gc (_slot_gone): nothing here writes it, and only a device that puts its record back and
# writes it over changes it; a resolve of a name a Kubo node does not hold waits on the DHT. (On storage's steady()
# clock: a wall clock stepped back does not hold the read for as long as the step; Released.orphan_slots)
SLOT_GONE_READ_EVERY = 24 * 3600.0
_EVERY_REV = 1 << 62  # (a revision past any: every object put for a slot, Released.slot_lets_go)
# why a session a rekey left this device out of keeps its candidates: the heads of the writers that kept it are
# sealed under a key it does not hold, and their members slot may pin its log as the rekey froze it (docs/FORMATS.md
# §6), which its head has left: gc cannot tell which of them every later import reads. Not a failure (gc exits 0)
LEFT_OUT = (
    "this device was left out of a rekey of it, and the members slot of the devices that kept it, which it cannot"
    " read, may name them (its log as the rekey froze it); a new share code of it imported here lets gc see which"
    " (`sessiond import`)"
)
UNREADABLE = (StoreError, RegistryError, DecryptError, LogError, TimeoutError, OSError, dagcbor.DagCborError)
# why a delete here keeps candidates of the session in the store for good (kept_at_delete)
FROZEN_KEPT = "the members slot pins this device's log as a rekey froze it, which every import of the session reads"
FROZEN_KEPT_ALL = (
    "the members slot of the devices a rekey kept may pin this device's log as it froze it, and this device, left"
    " out, cannot read that slot to tell which of them"
)


@dataclass(frozen=True)
class KeptForFrozen:
    """What a delete of a session here keeps in the store for good, its gc candidates forgotten: `hashes` (None:
    every one), how many (`objects`) and why, in the store `store` (its URL)."""

    hashes: frozenset[bytes] | None
    objects: int
    why: str
    store: str = ""

    def said(self) -> dict:
        """As the answer of `rm` names it."""
        return {"objects": self.objects, "why": self.why}

    def noted(self) -> dict:
        """As the delete notes it for `sessiond gc` (storage/lifecycle.py note_kept_in)."""
        return {"store": self.store, "objects": self.objects, "why": self.why}


class _Kept(Exception):
    """A session's candidates stay: why (`cannot`: the store offers no way to free anything)."""

    def __init__(self, why: str, *, cannot: bool = False):
        super().__init__(why)
        self.cannot = cannot


class Collector:
    def __init__(self, ctx: SyncContext, members: Members):
        self.ctx = ctx
        self.members = members
        # Per session: its members slot's entry as gc last read its object (key, revision, data), and the frozen
        # logs that object names. The entry names its object by hash: while the slot holds it, the object names
        # the same logs, and gc does not read it again (nor when this process's Members read or wrote it).
        self._slot_frozen: LRU[str, tuple[bytes, int, bytes, list[dict]]] = LRU(MEMBERS_KEPT)

    async def live(self, sid: str, seen: _Seen | None = None) -> set[bytes]:
        """Every object a current head of `sid` references (raises what kept it from reading them all). Its
        members slot, read, lets go what this device put for it and it no longer names (SyncContext.named); in a
        dry run (`seen` a list) it is only noted there (store URL, entry), the database left as it is."""
        ctx = self.ctx
        keys = ctx.keys.session_keys(sid)
        remote = await ctx.db.remote(sid)
        store = await ctx.store_for(sid)
        out: set[bytes] = set()
        if remote is not None:  # the members slot (its registry key: 0xed and the announce key): its object is live
            slot = await bounded(store.get_head(b"\xed" + bytes(remote["announce_pk"])), ctx.timeout)
            if slot is not None and len(slot.data) >= 33:
                out.add(bytes(slot.data[1:33]))
                await self._slot_read(store, slot, seen)
            await self._frozen_live(store, sid, remote, slot, out)
        pks = [bytes(p["head_pk"]) for p in await ctx.db.peers(sid)]
        if keys:
            pks.append(ctx.keys.head_pk(sid))
        for pk in dict.fromkeys(pks):
            await self.head_objects(store, sid, pk, out)
        return out

    async def head_objects(self, store: Store, sid: str, pk: bytes, out: set[bytes]) -> None:
        """Into `out`: what the head `pk` of `sid` in `store` names (its manifest, down to its nodes and parts
        objects), nothing if the store holds no such head (raises what kept it from reading them all)."""
        ctx = self.ctx
        head = await bounded(store.get_head(pk), ctx.timeout)
        if head is None:
            return
        keys = ctx.keys.session_keys(sid)
        if not keys:
            raise DecryptError(f"no key of {sid} here to open its heads with")
        mhash = manifest_hash_of(head)
        out.add(mhash)
        ct = await bounded(store.get(mhash), ctx.timeout)
        man = parse_manifest(open_manifest(ct, mhash, keys, pk, head.revision), sid=sid, head_pk=pk, rev=head.revision)
        await self._walk(LogReader(sid, man.device, store, ctx.timeout), man.entries(), out)

    async def _frozen_live(
        self, store: Store, sid: str, remote: dict, slot: RegistryEntry | None, out: set[bytes]
    ) -> None:
        """The objects of this device's own logs that a rekey froze (a writer dropped, and let back in since):
        the members slot pins each one's manifest, which its head left long ago (a candidate of this device's),
        and a device importing the session reads it and its pages. Those the slot's object names, and those this
        device noted (remotes.frozen: a slot read or written here), walked only for this device's head's, as no
        other device's log is ever a candidate here; of the others, their manifest (a writer that put one back
        here, its manifest lost, noted it as a candidate before its put: frozenrepair.py)."""
        ctx = self.ctx
        me = ctx.keys.head_pk(sid)
        frozen = decode_frozen(remote.get("frozen"))
        if slot is not None and len(slot.data) > 33:
            # (the slot's first: of two entries of one head at one revision, the first named is kept, and one put
            # back in place of a lost manifest, frozenrepair.py, is the slot's, not the one noted here)
            frozen = merge_frozen(await self._frozen_named(store, sid, slot), frozen)
        for f in frozen:
            mhash = bytes(f["h"])
            # (any writer's manifest: one this device put back, frozenrepair.py, is its candidate until named)
            out.add(mhash)
            if bytes(f["k"]) != me:
                continue
            ct = check_object(mhash, await bounded(store.get(mhash), ctx.timeout))
            man = parse_manifest(open_unpadded(ct, bytes(f["x"])), sid=sid, head_pk=me, rev=f["r"])
            await self._walk(LogReader(sid, man.device, store, ctx.timeout), man.entries(), out)

    async def kept_at_delete(self, sid: str) -> KeptForFrozen | None:
        """What a delete of `sid` here must keep in the store for good (None: nothing; gc frees its candidates as
        usual). Its members slot may pin this device's log as a rekey froze it (own_log_frozen), and nothing reads
        that slot for it once it is deleted: a device let back in reads it now and keeps what it pins alone
        (frozen_needs, within one store timeout); one still left out cannot read it, and a slot that could not be
        read keeps them all, as a store down or a log not read whole cannot tell which."""
        db = self.ctx.db
        if not await own_log_frozen(db, sid):
            return None
        candidates = await db.released.of_session(sid)
        url = (await self.ctx.store_for(sid)).url
        if (await db.syncstate.revocation(sid))[0]:
            return KeptForFrozen(None, len(candidates), FROZEN_KEPT_ALL, url)
        try:
            needs = await bounded(self.frozen_needs(sid), self.ctx.timeout)
        except (*UNREADABLE, ValueError) as exc:
            why = f"{FROZEN_KEPT}, and the slot could not be read to tell which of them: {describe(exc)}"
            return KeptForFrozen(None, len(candidates), why, url)
        kept = frozenset(h for h in candidates if h in needs)
        return KeptForFrozen(kept, len(kept), FROZEN_KEPT, url)

    async def frozen_needs(self, sid: str) -> set[bytes]:
        """What the members slot of `sid` pins of this device's candidates, read at its delete here (a device let
        back in after a rekey froze its log: sync/frozen.own_log_frozen): the frozen logs the slot's object names,
        and those noted here, as _frozen_live walks them. The rest of its candidates are freed as usual. Raises
        what kept it from reading them (the delete then keeps them all)."""
        ctx = self.ctx
        remote = await ctx.db.remote(sid)
        if remote is None:
            return set()
        store = await ctx.store_for(sid)
        slot = await bounded(store.get_head(b"\xed" + bytes(remote["announce_pk"])), ctx.timeout)
        out: set[bytes] = set()
        await self._frozen_live(store, sid, remote, slot, out)
        return out

    async def _frozen_named(self, store: Store, sid: str, slot: RegistryEntry) -> list[dict]:
        """The frozen logs the object of `sid`'s members slot (its entry `slot`) names: as this process last read
        or wrote that object, when the slot holds the same entry since (the same object: its hash is in the
        entry), else read from `store`. A slot that moved is always read."""
        known = self.members.frozen_as_seen(sid, slot)
        noted = self._slot_frozen.get(sid)
        if known is None and noted is not None and noted[:3] == (slot.pk, slot.revision, bytes(slot.data)):
            known = noted[3]
        if known is not None:
            return [dict(f) for f in known]
        h = bytes(slot.data[1:33])
        ct = check_object(h, await bounded(store.get(h), self.ctx.timeout))
        obj = dagcbor.decode(open_members(ct, self.ctx.keys.session_keys(sid), bytes(slot.data[33:])))
        frozen = parse_members(obj)[2] if isinstance(obj, dict) else []
        self._slot_frozen[sid] = (slot.pk, slot.revision, bytes(slot.data), [dict(f) for f in frozen])
        return frozen

    async def _slot_read(self, store: Store, slot: RegistryEntry, seen: _Seen | None) -> None:
        """A members slot read from `store`: what this device put for it and it no longer names let go (a dry run,
        `seen` a list: noted there instead)."""
        if seen is not None:
            seen.append((store.url, slot))
        else:
            await self.ctx.named(store, slot, written=False)

    async def _orphan_slots(self, seen: _Seen | None) -> tuple[set[bytes], dict[str, str]]:
        """The members slots this device put objects for in sessions deleted here since (nothing else reads them):
        each read, what it no longer names let go (as live() does), and what it names returned, live; then its
        records dropped (Released.slot_settled): no later gc reads it again (its cost would grow with every session
        ever deleted), and what it names stays in the store. A slot found gone: _slot_gone. A slot that cannot
        be read keeps its records for the next gc, and the candidates of its sessions stay this run, returned
        with why (session -> error): what it names may be one of them (this device killed between its write of the
        slot and its note, SyncContext.named), and no other read of it would keep it. A dry run drops nothing."""
        out: set[bytes] = set()
        unread: dict[str, str] = {}
        for url, pk, sids in await self.ctx.db.released.orphan_slots(steady() - SLOT_GONE_READ_EVERY):
            try:
                store = self.ctx.open_store(url, missing_ok=False)
                slot = await bounded(store.get_head(pk), self.ctx.timeout)
            except (*UNREADABLE, ValueError) as exc:
                log.warning("a deleted session's members slot could not be read for gc: %s", describe(exc))
                unread.update(dict.fromkeys(sids, describe(exc)))
                continue
            if slot is not None and len(slot.data) >= 33:
                out.add(bytes(slot.data[1:33]))
                await self._slot_read(store, slot, seen)
                if seen is None:
                    await self.ctx.db.released.slot_settled(url, pk)
            elif seen is not None:  # (a dry run: what _slot_gone would let go, counted)
                if not store.heads_expire:
                    seen.append((url, pk))
            else:
                try:
                    await self._slot_gone(store, url, pk)
                except (*UNREADABLE, ValueError) as exc:  # (kept: the next gc looks again)
                    log.warning("a deleted session's members slot could not be settled by gc: %s", describe(exc))
        return out, unread

    async def _slot_gone(self, store: Store, url: str, pk: bytes) -> None:
        """A deleted session's members slot `pk` read as gone from `store`. On a store whose heads do not expire it
        is: what this device put for it is let go (freed after the grace), its records dropped. On one whose heads
        expire (Kubo: a record the DHT forgot, or past its end of life, reads as gone) it may come back naming what
        it named (a device following the session puts its record again: reput.py), and written over later: the
        records stay while what they name is still in the store (read again by the next gc; freed once the slot
        is seen written over: Released.freed drops them), and go once none of it is. Such a slot is read again once
        SLOT_GONE_READ_EVERY has passed (Released.slot_read_gone), not at every run."""
        released = self.ctx.db.released
        if not store.heads_expire:
            await released.slot_gone(url, pk)
            return
        hashes = await released.slot_objects_of(url, pk)
        gone = [h for h in hashes if not await bounded(store.has(h), self.ctx.timeout)]
        if len(gone) == len(hashes):
            await released.slot_settled(url, pk)
        else:  # (what is no longer there: nothing to keep a record of; the rest read again in a while)
            await released.slot_read_gone(url, pk, gone)

    async def _due(self, grace: float, seen: _Seen | None) -> tuple[list[dict], int]:
        """The candidates let go at least `grace` ago, and how many others wait for their grace; in a dry run as
        the slots it read would have made them (_as_if_named)."""
        # (releases are stamped with storage's steady(), rounded to the millisecond: compared on that clock,
        # so that a grace of 0 takes everything let go before this call, and no step of the wall clock shortens
        # a grace; one let go before the daemon's start is sheltered for its first hour: kept_before)
        released = self.ctx.db.released
        due = await released.due(kept_before(grace))
        waiting = await released.count() - len(due)
        return await self._as_if_named(seen, due, waiting, grace) if seen else (due, waiting)

    async def _as_if_named(self, seen: _Seen, due: list[dict], waiting: int, grace: float) -> tuple[list[dict], int]:
        """A dry run's candidates (`due`, and how many are `waiting` for their grace) as the slots it read
        (`seen`) would have made them, had it let go what they no longer name (Released.slot_lets_go)."""
        released = self.ctx.db.released
        have = {(r["store_url"], bytes(r["hash"])) for r in due}
        forgotten: set[tuple[str, bytes]] = set()
        let_go: list[dict] = []
        for url, slot in seen:
            if isinstance(slot, bytes):  # gone for good (_slot_gone): all this device put for it let go
                let_go += (await released.slot_lets_go(url, slot, _EVERY_REV, b""))[0]
                continue
            if len(slot.data) < 33:
                continue
            lets_go, forgets = await released.slot_lets_go(url, slot.pk, slot.revision, bytes(slot.data[1:33]))
            if forgets:
                forgotten.add((url, bytes(slot.data[1:33])))
            let_go += lets_go
        # (after the times slot_lets_go gave them, as the run's due() is after its slots' reads let them go: a
        # grace of 0 takes them, even when the clock's millisecond turned in between)
        cutoff = kept_before(grace)
        for r in let_go:
            if (r["store_url"], r["hash"]) in have:
                continue
            have.add((r["store_url"], r["hash"]))
            if r["released_at"] <= cutoff:
                due.append(r)
            else:
                waiting += 1
        kept_due = [r for r in due if (r["store_url"], bytes(r["hash"])) not in forgotten]
        return kept_due, waiting - (len(forgotten) - (len(due) - len(kept_due)))

    async def _walk(self, reader: LogReader, entries: list[Entry], out: set[bytes]) -> None:
        """Entries' objects, and below nodes and parts objects (pages themselves are not read)."""
        for e in entries:
            out.add(e.ref.hash)
            if e.node:
                await self._walk(reader, reader._children(await reader._get(e.ref), e), out)
            elif e.parts:
                out.update(r.hash for r in reader._part_refs(await reader._get(e.ref), e))

    async def collect(self, *, grace: float, dry_run: bool) -> dict:
        ctx, db = self.ctx, self.ctx.db
        seen: _Seen | None = [] if dry_run else None  # (a dry run writes nothing)
        # the slots of sessions deleted here that this device put objects for: read first (none: nothing asked),
        # as what they no longer name is due to be freed too
        live, unsure = await self._orphan_slots(seen)  # (unsure: sessions whose candidates stay, and why)
        due, waiting = await self._due(grace, seen)
        # what deletes here kept in the store for good (kept_at_delete): never candidates, named in every report
        kept_in_store = [
            {**k, "store": shown_store(k["store"])} for k in await db.released.kept_in_store() if k["objects"]
        ]
        forgood = {"kept_in_store": kept_in_store} if kept_in_store else {}
        if not due:  # nothing to free: no head need be read (a store down or hung is not even asked)
            return {
                "dry_run": dry_run,
                "grace": grace,
                "objects": 0,
                "bytes": 0,
                "kept": waiting,
                "stores": [],
                **forgood,
            }
        sessions = set(await db.session_ids())
        down: dict[str, str] = {}  # stores that failed to answer: asked once, not once per session
        left_out = set()  # sessions a rekey left this device out of: their candidates stay (LEFT_OUT), no failure
        for sid in sorted(sessions):  # every session this device knows, not only those with candidates
            if (await db.syncstate.revocation(sid))[0]:
                left_out.add(sid)
                continue
            url = (await ctx.store_for(sid)).url
            if url in down:
                unsure[sid] = down[url]
                continue
            try:
                live |= await self.live(sid, seen)
            except UNREADABLE as exc:
                unsure[sid] = describe(exc)
                if failing(exc):
                    down[url] = describe_failure(exc, url)
                    unsure[sid] = down[url]
        # (what the heads' reads let go, written over in a members slot since this device's last read of it)
        due, waiting = await self._due(grace, seen)
        by_store: dict[str, dict[str, list[bytes]]] = defaultdict(lambda: defaultdict(list))
        for r in due:
            by_store[r["store_url"]][r["session_id"]].append(bytes(r["hash"]))
        reports = []
        kept = waiting
        for url, per_session in sorted(by_store.items()):
            rep: dict = {"store": shown_store(url), "objects": 0, "bytes": 0, "how": "deleted"}
            errors: list[str] = []
            try:
                store: Store | None = ctx.open_store(url, missing_ok=False)
            except (StoreError, ValueError, OSError) as exc:
                store, rep["how"] = None, f"cannot open the store: {describe(exc)}"
            for sid, hashes in sorted(per_session.items()):
                if store is None:
                    kept += len(hashes)
                    continue
                if sid in left_out:
                    kept += len(hashes)
                    rep.setdefault("held", []).append(f"{sid}: kept its {len(hashes)} objects: {LEFT_OUT}")
                    continue
                if sid in unsure:
                    kept += len(hashes)
                    errors.append(f"{sid}: kept its {len(hashes)} objects, its heads could not be read: {unsure[sid]}")
                    continue
                try:
                    n_live, result = await self._free_session(store, sid, hashes, live, dry_run, sid in sessions)
                except _Kept as k:
                    kept += len(hashes)
                    if k.cannot:
                        rep["how"] = str(k)
                    else:
                        errors.append(f"{sid}: {k}")
                    continue
                kept += n_live
                rep["how"] = result.how
                rep["objects"] += result.objects
                rep["bytes"] += result.nbytes
            if errors:
                rep["errors"] = errors
            reports.append(rep)
        objects = sum(r["objects"] for r in reports)
        if not dry_run and objects:
            log.info("gc freed objects", extra={"event": "gc", "objects": objects})
        return {
            "dry_run": dry_run,
            "grace": grace,
            "objects": objects,
            "bytes": sum(r["bytes"] for r in reports),
            "kept": kept,
            "stores": reports,
            **forgood,
        }

    async def _free_session(
        self, store: Store, sid: str, hashes: list[bytes], live: set[bytes], dry_run: bool, known: bool
    ) -> tuple[int, Freed]:
        """Free `sid`'s candidates not live, under its push lock: (how many were kept, what was freed)."""
        ctx = self.ctx
        await pause_for_tests("gc.freeing")  # (the tests hold it here: the candidates listed, nothing read or freed)
        async with ctx.lock(sid):
            # what a slot is about to name (SyncContext.put_to_name) stays: taken before the heads are read,
            # so that one named since is read as live, and again after, for one put meanwhile
            naming = set(ctx.naming)
            try:
                now_live = live | (await self.live(sid, [] if dry_run else None) if known else set())
            except UNREADABLE as exc:
                raise _Kept(f"kept its {len(hashes)} objects, its heads could not be read: {describe(exc)}") from None
            naming |= ctx.naming
            # still candidates, as of after the heads' read: one named since the list was made (a rekey's notice,
            # then its switch to the new slot, whose heads alone were read just now) is not this round's to free
            # (a dry run's list holds what its reads would have let go, no candidates yet: as listed)
            if not dry_run:
                still = await ctx.db.released.still(store.url, hashes)
                hashes = [h for h in hashes if h in still]
            referenced = [h for h in hashes if h in now_live]
            todo = [h for h in hashes if h not in now_live and h not in naming]
            if referenced and not dry_run:  # referenced again (a repair re-wrote them): no longer candidates
                await ctx.db.released.forget(store.url, referenced)
            try:
                result = await bounded(store.free(todo, dry_run=dry_run), max(ctx.timeout, 5 * len(todo)))
            except CannotDelete as exc:
                raise _Kept(str(exc), cannot=True) from None
            except (StoreError, TimeoutError, OSError) as exc:
                raise _Kept(f"the store failed: {describe(exc)}") from None
            if not dry_run:
                crash_point("gc:freed")  # (tests: killed with the objects freed, their candidates not forgotten)
                await ctx.db.released.freed(store.url, result.gone)
            return len(hashes) - len(todo), result
