"""Freeing store objects this device's logs no longer reference (`sessiond gc`).

The candidates are only what this device recorded letting go (storage/lifecycle.py `Released`: the
manifest a head moved on from, the pages a compaction merged away; and what a push put, noted before its
upload until a recorded revision names it: a push killed in between leaves what its retry does not name; and
a members object or a rekey's notice, noted before its put until the members slot names it: a retry seals it
anew, SyncContext.put_to_name, and gc leaves one being named alone whatever its grace; and such an object once
the slot is seen written over, by this device or another: SyncContext.named, when this device writes the slot
or reads it, here too),
so an object another device wrote, or one this device cannot account for, is never a candidate. A
candidate is freed once its grace period has passed since it was let go (a follower that read the old
head a moment ago can still fetch it) and no current head of any session this device knows references it:
every head (this device's, each followed device's, the members slot) is read and walked down to its nodes
and parts objects. A session whose heads cannot all be read and opened keeps its candidates (the round is
reported, not guessed).
A session's candidates are freed under its push lock, so no push of it runs in between.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from ..storage.model import now
from ..storage.redact import shown_store
from ..stores import CannotDelete, Freed, Store, StoreError
from ..stores.errors import describe_failure, failing
from ..stores.registry import RegistryError
from .context import SyncContext
from .crypto import DecryptError
from .errors import crash_point, describe
from .heads import manifest_hash_of, open_manifest
from .manifest import parse_manifest
from .pages import Entry, LogError
from .pull import LogReader

log = logging.getLogger("sessiond.sync")
DEFAULT_GRACE = 24 * 3600.0
_UNREADABLE = (StoreError, RegistryError, DecryptError, LogError, TimeoutError, OSError)


class _Kept(Exception):
    """A session's candidates stay: why (`cannot`: the store offers no way to free anything)."""

    def __init__(self, why: str, *, cannot: bool = False):
        super().__init__(why)
        self.cannot = cannot


class Collector:
    def __init__(self, ctx: SyncContext):
        self.ctx = ctx

    async def live(self, sid: str) -> set[bytes]:
        """Every object a current head of `sid` references (raises what kept it from reading them all)."""
        ctx = self.ctx
        keys = ctx.keys.session_keys(sid)
        remote = await ctx.db.remote(sid)
        store = await ctx.store_for(sid)
        out: set[bytes] = set()
        if remote is not None:  # the members slot (its registry key: 0xed and the announce key): its object is live
            slot = await asyncio.wait_for(store.get_head(b"\xed" + bytes(remote["announce_pk"])), ctx.timeout)
            if slot is not None and len(slot.data) >= 33:
                out.add(bytes(slot.data[1:33]))
                await ctx.named(store, slot, written=False)  # (what this device put for it, written over: let go)
        pks = [bytes(p["head_pk"]) for p in await ctx.db.peers(sid)]
        if keys:
            pks.append(ctx.keys.head_pk(sid))
        for pk in dict.fromkeys(pks):
            head = await asyncio.wait_for(store.get_head(pk), ctx.timeout)
            if head is None:
                continue
            if not keys:
                raise DecryptError(f"no key of {sid} here to open its heads with")
            mhash = manifest_hash_of(head)
            out.add(mhash)
            ct = await asyncio.wait_for(store.get(mhash), ctx.timeout)
            man = parse_manifest(
                open_manifest(ct, mhash, keys, pk, head.revision), sid=sid, head_pk=pk, rev=head.revision
            )
            await self._walk(LogReader(sid, man.device, store, ctx.timeout), man.entries(), out)
        return out

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
        # (releases are stamped with storage's now(), rounded to the millisecond: compared on that clock,
        # so that a grace of 0 takes everything let go before this call)
        due = await db.released.due(now() - grace)
        waiting = await db.released.count() - len(due)
        if not due:  # nothing to free: no head need be read (a store down or hung is not even asked)
            return {"dry_run": dry_run, "grace": grace, "objects": 0, "bytes": 0, "kept": waiting, "stores": []}
        sessions = set(await db.session_ids())
        live: set[bytes] = set()
        unsure: dict[str, str] = {}
        down: dict[str, str] = {}  # stores that failed to answer: asked once, not once per session
        for sid in sorted(sessions):  # every session this device knows, not only those with candidates
            url = (await ctx.store_for(sid)).url
            if url in down:
                unsure[sid] = down[url]
                continue
            try:
                live |= await self.live(sid)
            except _UNREADABLE as exc:
                unsure[sid] = describe(exc)
                if failing(exc):
                    down[url] = describe_failure(exc, url)
                    unsure[sid] = down[url]
        # (what the heads' reads let go, written over in a members slot since this device's last read of it)
        due = await db.released.due(now() - grace)
        waiting = await db.released.count() - len(due)
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
        }

    async def _free_session(
        self, store: Store, sid: str, hashes: list[bytes], live: set[bytes], dry_run: bool, known: bool
    ) -> tuple[int, Freed]:
        """Free `sid`'s candidates not live, under its push lock: (how many were kept, what was freed)."""
        ctx = self.ctx
        async with ctx.lock(sid):
            # what a slot is about to name (SyncContext.put_to_name) stays: taken before the heads are read,
            # so that one named since is read as live, and again after, for one put meanwhile
            naming = set(ctx.naming)
            try:
                now_live = live | (await self.live(sid) if known else set())
            except _UNREADABLE as exc:
                raise _Kept(f"kept its {len(hashes)} objects, its heads could not be read: {describe(exc)}") from None
            naming |= ctx.naming
            referenced = [h for h in hashes if h in now_live]
            todo = [h for h in hashes if h not in now_live and h not in naming]
            if referenced and not dry_run:  # referenced again (a repair re-wrote them): no longer candidates
                await ctx.db.released.forget(store.url, referenced)
            try:
                result = await asyncio.wait_for(store.free(todo, dry_run=dry_run), max(ctx.timeout, 5 * len(todo)))
            except CannotDelete as exc:
                raise _Kept(str(exc), cannot=True) from None
            except (StoreError, TimeoutError, OSError) as exc:
                raise _Kept(f"the store failed: {describe(exc)}") from None
            if not dry_run:
                crash_point("gc:freed")  # (tests: killed with the objects freed, their candidates not forgotten)
                await ctx.db.released.freed(store.url, result.gone)
            return len(hashes) - len(todo), result
