"""Pushing this device's log of a session to its store, durably and in order.

Order of a push: data objects (pages, nodes), then the manifest, then the head. The manifest's
plaintext and revision are recorded in SQLite (`sync_state.pending`, the outbox) before the manifest
is uploaded, and the pushed mark moves only after the store holds the new head. A crash at any point
resumes from the recorded state: the same objects and the same manifest are written again (they are
deterministic), so a retried push is idempotent and never reuses a key for different plaintext.
Full levels of the log are folded upward as revisions of their own (compaction), except after a long
run (a first push), where they are folded before its one revision. When the store lost
part of what was pushed, `repair` makes the next push send the whole log again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator

from ..storage.model import LogRun, now
from ..stores import StaleHead, StoreError
from ..stores.cid import CIDV1_RAW_BLAKE3
from ..stores.registry import RegistryEntry, RegistryError
from . import dagcbor
from .bounded import LRU
from .context import SyncContext
from .errors import SyncError
from .heads import levels_from_cbor, manifest_hash_of
from .members import Members
from .mirror import MirrorStore
from .pages import Entry
from .push import FANOUT, Written, is_long
from .revision import Made, OnePush, Revision, RevisionJob, contiguous

log = logging.getLogger("sessiond.sync")
# sessions whose last published head is remembered (to commit without reading it again), most recent
PUBLISHED_KEPT = 2048
# sessions whose level tree is kept decoded (a push of one of them decodes none), most recently pushed:
# a few dozen entries each, so a few hundred KB at most
LEVELS_KEPT = 256


class _StoreAhead(Exception):
    """The store refused a head because it holds a higher revision of it (`head`)."""

    def __init__(self, head: RegistryEntry):
        super().__init__(f"the store holds revision {head.revision}")
        self.head = head


class Pusher:
    """Pushes this device's log of each session; announces this device in the members slot on the way."""

    def __init__(self, ctx: SyncContext, members: Members):
        self.ctx = ctx
        self.members = members
        # Per session: the head this process last published or read in the store, as (store URL, head
        # key, revision, manifest hash). A commit that follows it takes the next revision and links the
        # manifest without reading the head again: an append is then 3 requests on an S5 portal or relay
        # (page, manifest, head), not 4. The first commit of a session in a process still reads the
        # head: the home may be older than the store (restored from a backup), and writing a revision
        # the store already holds would seal a different manifest under that revision's key and nonce.
        # Kept for the PUBLISHED_KEPT most recently pushed sessions: one pushed again after falling out
        # reads its head once more.
        self._published: LRU[str, tuple[str | None, bytes, int, bytes]] = LRU(PUBLISHED_KEPT)
        # Per session: the level tree last recorded, as (its bytes in sync_state.tree, its levels), so
        # that the next push need not decode it again (a strict DAG-CBOR decode re-encodes to check:
        # ~1 ms of the event loop for a tree of 36 entries). Used only while sync_state holds the very
        # bytes: a repair or a move to another store changes them, and they are decoded again.
        self._levels: LRU[str, tuple[bytes, tuple[tuple[Entry, ...], ...]]] = LRU(LEVELS_KEPT)

    def _levels_of(self, sid: str, tree: bytes | None) -> list[list[Entry]]:
        known = self._levels.get(sid)
        if tree and known is not None and known[0] == tree:
            return [list(lv) for lv in known[1]]
        return levels_from_cbor(tree)

    async def push(self, sid: str, *, compact: bool = True, force: bool = False) -> dict:
        """Push this device's new operations of `sid`, then (as a revision of its own) fold full levels
        of the log upward. Returns what each step wrote."""
        db = self.ctx.db
        async with self.ctx.lock(sid):
            state = await db.push_state(sid)  # its sync_state and last seq, in one read
            if state is None:
                return {"session": sid, "skipped": "deleted"}
            # The push's start up to its first bulk read ran as one loop step of 300-550 us, which an
            # append arriving meanwhile waited out (bench/results/profile-tail.md): cut in four here and
            # below, so that a request gets the loop in between.
            await asyncio.sleep(0)
            # a new key is written off the loop while the first run is read and sealed (see _key_on_disk)
            key, key_written = self.ctx.keys.session_key_early(sid)
            if key is None:  # being made by another caller: wait for it
                key, key_written = await self.ctx.keys.make_session_key(sid), None
            remote = state["remote"]  # (read with the state: store_for's read, and the one below, saved)
            one = OnePush(self.ctx, sid, self.ctx.open_store(remote["store_url"] if remote else None), key, key_written)
            await asyncio.sleep(0)
            if state.get("rekey_claims"):
                one.claims = dagcbor.decode(state["rekey_claims"])
            if state["pending"]:
                await self._key_on_disk(one)
                await self._publish(one, state, Revision.recorded(state["pending"]))
            out = {
                "session": sid,
                "revision": state["head_rev"],
                "objects": 0,
                "bytes": 0,
                "compaction_objects": 0,
                "compaction_bytes": 0,
            }
            last, first = state["last_seq"], state["pushed_seq"] + 1
            levels = self._levels_of(sid, state["tree"])

            async def load(a: int, b: int) -> LogRun:
                return contiguous(sid, a, b, await db.log_run(sid, db.device_id, a - 1, b))

            if first <= last and not is_long(first, last):
                # a short run (every push but a first): read, and its pages made, in one job with the revision
                await asyncio.sleep(0)
                out["revision"], levels = await self._commit_revision(one, state, levels, last, None, first)
                out["objects"], out["bytes"] = one.writer.written.objects, one.writer.written.bytes
            elif first <= last:
                await asyncio.sleep(0)

                @contextlib.contextmanager
                def open_loader() -> Iterator[Callable[[int, int], LogRun]]:
                    with db.run_reader() as reader:  # a worker thread's own connection
                        yield lambda a, b: contiguous(sid, a, b, reader.log_run(sid, db.device_id, a - 1, b))

                reached = [0]

                def progress(seq: int) -> None:  # chunks end out of order: the bar only goes forward
                    reached[0] = max(reached[0], seq - first + 1)
                    self.ctx.progress("push", sid, reached[0], last - first + 1)

                one.writer.on_progress = progress
                entries, lamport = await one.writer.write_run(load, open_loader, first, last)
                if reached[0]:  # a long run that told its progress: and now it is done
                    progress(last)
                levels[0].extend(entries)
                unpin: list[bytes] = []
                if compact and is_long(first, last) and any(len(lv) >= FANOUT for lv in levels):
                    # A long run (a first push) is folded before its one revision, not in a second: its
                    # full pages fold into nodes, which takes no read and a few small objects, where a
                    # second revision costs another manifest and head, each written and fsynced, and two
                    # more records in SQLite (50-70 ms of a first push on the loaded machine).
                    written, one.writer.written = one.writer.written, Written()
                    levels = await one.writer.compact(levels, self._records_of(sid))
                    unpin = one.writer.unreferenced
                    out["compaction_objects"] = one.writer.written.objects
                    out["compaction_bytes"] = one.writer.written.bytes
                    one.writer.written = written
                out["revision"], levels = await self._commit_revision(one, state, levels, last, lamport)
                out["objects"], out["bytes"] = one.writer.written.objects, one.writer.written.bytes
                await self._unpin(one, unpin)
            if force and out["revision"] == state["head_rev"]:  # a new manifest even without new operations
                out["revision"], levels = await self._commit_revision(one, state, levels, state["pushed_seq"], None)
            if compact and any(len(lv) >= FANOUT for lv in levels):
                one.writer.written = Written()
                levels = await one.writer.compact(levels, self._records_of(sid))
                out["revision"], levels = await self._commit_revision(one, state, levels, state["pushed_seq"], None)
                await self._unpin(one, one.writer.unreferenced)
                out["compaction_objects"] = one.writer.written.objects
                out["compaction_bytes"] = one.writer.written.bytes
            await asyncio.sleep(0)  # (the push's record written: what is left of it in a step of its own)
            # as read at the start: a share adds the row outside this lock, but announces the device itself
            if remote is not None and not remote["announced"] and self.ctx.keys.write_secret(sid) is not None:
                # so that the other devices find this device's log, and a rekey keeps it: a writer that
                # has written nothing yet too (a write import that a crash cut short before it was listed)
                await self.members.ensure_member(sid)
            return out

    def _records_of(self, sid: str) -> Callable[[int, int], Awaitable[LogRun]]:
        """This device's operations first..upto of `sid` (what compaction merges)."""
        db = self.ctx.db

        async def load_records(first: int, upto: int) -> LogRun:
            return await db.log_run(sid, db.device_id, first - 1, upto)

        return load_records

    @staticmethod
    async def _key_on_disk(one: OnePush) -> None:
        """Wait for the session key's file if this push made it (before a revision is recorded)."""
        if one.key_written is not None:
            await asyncio.shield(one.key_written)  # its failure fails the push; a cancelled push leaves it be
            one.key_written = None

    async def _commit_revision(
        self,
        one: OnePush,
        state: dict,
        levels: list[list[Entry]],
        last: int,
        lamport: int | None,
        first: int | None = None,
    ) -> tuple[int, list[list[Entry]]]:
        """Publish a revision of `levels` covering this device's log up to `last`, with the pages of
        operations first..last (if `first`) added to level 0: the run read, its pages, manifest and head
        made in one job off the event loop, the pages stored, the revision recorded, then the manifest and
        head published. Returns the revision and its levels. `state` (the session's sync_state) is kept up
        to date."""
        db = self.ctx.db
        if lamport is None and first is None:
            lamport = await db.get_lamport(one.sid)
        known = self._published.get(one.sid)
        current_hash: bytes | None
        if known is not None and known[:3] == (getattr(one.store, "url", None), one.head_pk, state["head_rev"]):
            current_rev, current_hash = known[2], known[3]
        else:
            current = await asyncio.wait_for(one.store.get_head(one.head_pk), self.ctx.timeout)
            current_rev = max(state["head_rev"], current.revision if current else 0)
            current_hash = manifest_hash_of(current) if current else None
        job = RevisionJob(one, current_rev + 1, current_hash, levels, last, lamport or 0, first)
        if first is None:
            made = await self._in_job(one, job)
        else:
            read = await db.with_log_run(one.sid, db.device_id, first - 1, last, job.read)
            if isinstance(read, LogRun):  # large messages: their pages first, on both sealing threads
                job.levels[0].extend(await one.writer.write_pages(read))
                job.lamport = max(read.lams, default=0)
                read = await self._in_job(one, job)
            made = read
        await one.writer.put_objects(made.objects)
        try:
            await self._record(one, state, made, ahead_ok=True)
        except _StoreAhead as ahead:
            # Someone published a higher revision of this head since this process last saw it (the
            # store is ahead of what we know): go on from the store's head, as a first commit would.
            log.warning(
                "the store holds a newer head of this device's log than this process published; going on from it",
                extra={"session": one.sid, "rev": ahead.head.revision},
            )
            head = ahead.head
            levels = made.revision.levels or levels
            made = await self._in_job(
                one, RevisionJob(one, head.revision + 1, manifest_hash_of(head), levels, last, job.lamport)
            )
            await self._record(one, state, made)
        return made.revision.rev, made.revision.levels or levels

    @staticmethod
    async def _in_job(one: OnePush, job: RevisionJob) -> Made:
        """A revision's CPU work in one job on a sealing thread (the event loop hands it over once)."""
        return await asyncio.get_running_loop().run_in_executor(one.writer.workers.seal, job.run)

    async def _record(self, one: OnePush, state: dict, made: Made, *, ahead_ok: bool = False) -> None:
        """Record the revision (fixed before anything of it is uploaded: the session key's file first),
        then publish it."""
        await self._key_on_disk(one)
        await self.ctx.db.save_sync_state(one.sid, pending=made.pending)
        state["pending"] = made.pending
        await self._publish(one, state, made.revision, made, ahead_ok=ahead_ok)

    async def _publish(
        self, one: OnePush, state: dict, revision: Revision, made: Made | None = None, *, ahead_ok: bool = False
    ) -> None:
        """Upload the recorded manifest and publish its head (`made`: both sealed; None: sealed here, a
        revision recorded by a push that a crash or failure cut short). A head refused as stale (StaleHead)
        is read: if the store holds this very entry (a push retried after a crash), it is done; if it holds
        a higher revision, `ahead_ok` raises _StoreAhead so that the commit goes on from it, else SyncError."""
        sid, writer, head_pk = one.sid, one.writer, one.head_pk
        rev = revision.rev
        if made is None:
            made = await self._in_job(one, RevisionJob.sealing(one, revision))
        ct, ref, entry = made.manifest, made.ref, made.entry
        try:  # the manifest, then the head naming it (a folder store: in one batch, the head after the fsyncs)
            await one.store.put_then_set_head([ct], [ref.hash], entry, timeout=self.ctx.timeout)
        except StaleHead:
            self._published.pop(sid, None)
            current = await asyncio.wait_for(one.store.get_head(head_pk), self.ctx.timeout)
            if current is None or current.data != entry.data or current.revision != rev:
                if ahead_ok and current is not None and current.revision > rev:
                    raise _StoreAhead(current) from None
                raise SyncError(
                    f"the store holds a newer head (revision {current.revision if current else '?'}) "
                    f"for this device's log of {sid} that this device did not write"
                ) from None
        writer.written.objects += 1
        writer.written.bytes += len(ct)
        done = {
            "pushed_seq": revision.seq,
            "head_rev": rev,
            "tree": revision.tree,
            "pending": None,
            "last_error": None,
            "last_push": now(),
        }
        url, prev = getattr(one.store, "url", None), revision.prev
        left = None  # the manifest the head left, noted for gc (see _released) in the same transaction
        if url is not None and prev is not None and prev.startswith(CIDV1_RAW_BLAKE3):
            left = (url, [prev[len(CIDV1_RAW_BLAKE3) :]])
        await self.ctx.db.save_pushed(sid, left, **done)
        state.update(done)
        await asyncio.sleep(0)  # (the record written: what is left of the push in a step of its own)
        self._published[sid] = (url, head_pk, rev, ref.hash)
        if made.frozen is not None:
            self._levels[sid] = (revision.tree, made.frozen)
        # debug, not info: a line per push was ~100 us of the loop and ~50 lines a second under load;
        # the `sync.pushed` event and status tell of pushes, the log of what went wrong
        log.debug(
            "pushed",
            extra={"session": sid, "rev": rev, "objects": writer.written.objects, "bytes": writer.written.bytes},
        )
        self.ctx.on_event({"type": "sync.pushed", "session": sid, "revision": rev, "seq": revision.seq})

    async def _unpin(self, one: OnePush, hashes: list[bytes]) -> None:
        """Let the store drop the pages a compaction merged away (Store.unpin: a Kubo node's pins, a
        pinning service's pin requests; other stores keep what they hold), once the head no longer
        references them. Nothing else needs them: a reader starts from the current head and never
        walks `prev` to older manifests (docs/FORMATS.md, "Snapshot layout"), a checkpoint proof is a
        hash over messages and names no object, and a group folded into a node is still referenced by
        it (compact lists only merged pages). A reader that read the previous head a moment ago may
        still fetch them: unpinning is not deleting (a node's garbage collection runs much later), and
        and a read that finds one gone fails and is retried from the newer head (sync/follower.py). Old manifests stay
        pinned (the head's `prev` chain). Best effort: a failure is logged, never fails the push."""
        if not hashes:
            return
        await self._released(one, hashes)
        try:
            await asyncio.wait_for(one.store.unpin(hashes), self.ctx.timeout)
        except (TimeoutError, StoreError, OSError) as exc:
            log.warning(
                "could not unpin %d objects the log no longer references: %s",
                len(hashes),
                exc,
                extra={"session": one.sid, "objects": len(hashes)},
            )

    async def _released(self, one: OnePush, hashes: list[bytes]) -> None:
        """Note objects this device's log no longer references, and since when: `sessiond gc` frees them
        after its grace period (sync/gc.py), once it has checked that no current head references them."""
        url = getattr(one.store, "url", None)
        if url is not None:
            await self.ctx.db.released.add(url, one.sid, hashes)

    async def snapshot_id(self, sid: str) -> dict | None:
        """Where this device's latest snapshot of `sid` is: its head revision and manifest object ids."""
        state = await self.ctx.db.sync_state(sid)
        if not state["head_rev"]:
            return None
        store = await self.ctx.store_for(sid)
        head = await asyncio.wait_for(store.get_head(self.ctx.keys.head_pk(sid)), self.ctx.timeout)
        if head is None:
            return None
        h = manifest_hash_of(head)
        cid = base64.b32encode(CIDV1_RAW_BLAKE3 + h).decode("ascii").lower().rstrip("=")
        return {
            "revision": head.revision,
            "head_key": head.pk.hex(),
            "manifest_ipfs_cid": "b" + cid,
            "manifest_blake3": h.hex(),
        }

    # ---------------------------------------------------------------- repair
    async def _store_lacks_log(self, sid: str) -> bool:
        """Whether the store lost what this device pushed of `sid`: its head, the manifest, or an object
        the manifest points to (or verify found one missing further down). Cheap: no object is read."""
        ctx = self.ctx
        if sid in ctx.repair:
            return True
        state = await ctx.db.sync_state(sid)
        if not state["head_rev"] or state["pending"] or ctx.keys.session_key(sid) is None:
            return False
        store = await ctx.store_for(sid)
        # a mirror: each of its stores that should hold the log (a read through the mirror finds the head and
        # every object in whichever store has them, so one store's loss would never show)
        for st in store.caught_up() if isinstance(store, MirrorStore) else [store]:
            try:
                head = await asyncio.wait_for(st.get_head(ctx.keys.head_pk(sid)), ctx.timeout)
                if head is None or head.revision < state["head_rev"]:
                    return True
                levels = levels_from_cbor(state["tree"])
                hashes = [manifest_hash_of(head)] + [e.ref.hash for lv in levels for e in lv]
                if await st.first_missing(hashes, timeout=ctx.timeout) is not None:
                    return True
            except (TimeoutError, StoreError, RegistryError, OSError):
                continue  # a store that does not answer is not one that lost data; the push reports it
        return False

    async def repair(self, sid: str) -> bool:
        """Reset the push state of `sid` so that its next push sends this device's whole log again, if
        the store lacks any of it. Returns whether it did (the caller queues the push)."""
        async with self.ctx.lock(sid):
            if not await self.ctx.db.last_seq(sid) or not await self._store_lacks_log(sid):
                return False
            await self.ctx.db.save_sync_state(sid, pushed_seq=0, tree=None, pending=None)
            self.ctx.repair.discard(sid)
            self._published.pop(sid, None)
        log.warning(
            "the store lacks objects of this device's log; pushing all of it again",
            extra={"session": sid, "event": "repair"},
        )
        return True
