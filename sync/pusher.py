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
import logging
from collections.abc import Awaitable, Callable

from nacl.signing import SigningKey

from ..storage.model import LogRun, now
from ..storage.testhooks import pause_for_tests
from ..stores import StaleHead, Store, StoreError
from ..stores.bounded import bounded
from ..stores.cid import CIDV1_RAW_BLAKE3
from ..stores.errors import HeadRolledBack, LyingServer
from ..stores.registry import RegistryEntry, RegistryError
from . import dagcbor
from .bounded import LRU
from .context import SyncContext
from .errors import SyncError, crash_point, describe
from .heads import encode_levels, head_data, levels_from_cbor, manifest_hash_of, published_before
from .logloaders import log_loaders
from .lostlog import store_lacks_log, writes_ended
from .manifest import encode_manifest
from .members import Members
from .pages import Entry
from .push import FANOUT, LogWriter, Written, is_long
from .revision import Revision

log = logging.getLogger("sessiond.sync")

# sync_state.head_announce of a head found published under a key from before a rekey (Pusher._publish: a push killed
# after its head, before its mark, while the key switched), marked so before the new head under the current key that
# the same push publishes next: no members slot's announce key, so owed (was NULL, "not known": a kill between the
# two left the head under the old key for good)
OLDER_KEY = b""

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


class _OnePush:
    """What one push of one session needs: its keys and a writer that counts what it wrote."""

    def __init__(self, ctx: SyncContext, sid: str, store: Store, key: bytes, key_written: asyncio.Future | None = None):
        self.sid = sid
        self.store = store
        # A new session key's durable write (KeyStore.session_key_early), awaited before the first
        # revision is recorded: nothing names an object sealed with the key before its file is on disk
        self.key_written = key_written
        if key_written is not None:  # a push that fails first leaves the write's failure to the others
            key_written.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.head_key: SigningKey = ctx.keys.head_key(sid)
        self.head_pk = ctx.keys.head_pk(sid)
        self.writer = LogWriter(sid, ctx.db.device_id, key, store, ctx.timeout, workers=ctx.workers)
        self.url: str | None = getattr(store, "url", None)
        # the announce key of the members slot the session was on as the push read its key (sync_state.head_announce)
        self.announce: bytes | None = None
        url = self.url
        if url is not None:
            # What the push puts is noted for gc before its upload, and forgotten in the transaction that
            # records the revision naming it (_commit_at): killed in between, and more appended before the
            # retry, the retry cuts a different last page (and folds different groups), and what the killed
            # attempt put that no revision names was left in the store, never noted, never freed.
            async def note(hashes: list[bytes]) -> None:
                await ctx.db.released.add(url, sid, hashes)

            self.writer.before_put = note
        # this device's rekey claims, written into every manifest (sync_state.rekey_claims; rekey.py)
        self.claims: list[dict] = []


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
        # sessions whose head a repair found served rolled back or forged by a store holding every object of the
        # log (lostlog.py head_only): their next push publishes a new head over the recorded tree (a forced push).
        # Kept across a restart (storage/headlies.py HeadMends `again`: resumed by `resume_mends` at the start). The new
        # head names the manifest of the head it replaces as `prev` (sync_state.head_manifest, kept: _commit_revision).
        self._head_again: set[str] = set()

    def _levels_of(self, sid: str, tree: bytes | None) -> list[list[Entry]]:
        known = self._levels.get(sid)
        if tree and known is not None and known[0] == tree:
            return [list(lv) for lv in known[1]]
        return levels_from_cbor(tree)

    async def push(self, sid: str, *, compact: bool = True, force: bool = False) -> dict:
        """Push this device's new operations of `sid`, then (as a revision of its own) fold full levels
        of the log upward. Returns what each step wrote."""
        db = self.ctx.db
        await pause_for_tests("push.begin")  # (a test holds a session's first push before its key is made)
        async with self.ctx.lock(sid):
            try:  # (its row's key alone: not its texts, nor a guess of the session meant when it is gone)
                here = await db.has_session(sid)
            except Exception:
                here = False
            if not here:
                self._head_again.discard(sid)
                return {"session": sid, "skipped": "deleted"}
            force = force or sid in self._head_again  # (a repair's: only the head was lost, repair below)
            # The push's start up to its first bulk read ran as one loop step of 300-550 us, which an
            # append arriving meanwhile waited out (bench/results/profile-tail.md): cut in four here and
            # below, so that a request gets the loop in between.
            await asyncio.sleep(0)
            # the members slot the session is on, read before its key (a switch rotates the key, then names the new
            # slot): a head recorded as sealed on the slot it names is under that slot's key or a newer one
            remote = await db.remote(sid)
            # a new key is written off the loop while the first run is read and sealed (see _key_on_disk)
            key, key_written = self.ctx.keys.session_key_early(sid)
            if key is None:  # being made by another caller: wait for it (and then read the store it syncs through)
                key, key_written = await self.ctx.keys.make_session_key(sid), None
                store = await self.ctx.store_for(sid)
            else:  # (no wait since the row was read: the store it names, not a second read of it)
                store = self.ctx.store_of(remote)
            one = _OnePush(self.ctx, sid, store, key, key_written)
            one.announce = bytes(remote["announce_pk"]) if remote is not None else None
            await asyncio.sleep(0)
            state = await db.sync_state(sid)
            if state.get("rekey_claims"):
                one.claims = dagcbor.decode(state["rekey_claims"])
            if state["pending"]:
                await self._key_on_disk(one)
                if await self._publish(one, Revision.recorded(state["pending"])):
                    force = True  # (found published under a key from before a rekey: a new head under this one)
                state = await db.sync_state(sid)
            out = {
                "session": sid,
                "revision": state["head_rev"],
                "objects": 0,
                "bytes": 0,
                "compaction_objects": 0,
                "compaction_bytes": 0,
            }
            last = await db.last_seq(sid)
            levels = self._levels_of(sid, state["tree"])
            committed = False  # a revision of this push's own, under the key it seals with
            if last > state["pushed_seq"]:
                await asyncio.sleep(0)

                load, open_loader = log_loaders(db, sid, db.device_id)

                first, reached = state["pushed_seq"] + 1, [0]

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
                out["revision"] = await self._commit_revision(one, state, levels, last, lamport, merged=unpin)
                committed = True
                out["objects"], out["bytes"] = one.writer.written.objects, one.writer.written.bytes
                await self._unpin(one, unpin)
                state = await db.sync_state(sid)
            # a new manifest even without new operations (one is enough: was a second after the operations' own,
            # naming the same, as `out["revision"]` was compared with the state read after it)
            if force and not committed:
                out["revision"] = await self._commit_revision(one, state, levels, state["pushed_seq"], None)
                state = await db.sync_state(sid)
            if compact and any(len(lv) >= FANOUT for lv in levels):
                one.writer.written = Written()
                levels = await one.writer.compact(levels, self._records_of(sid))
                out["revision"] = await self._commit_revision(
                    one, state, levels, state["pushed_seq"], None, merged=one.writer.unreferenced
                )
                crash_point("push:compacted")
                await self._unpin(one, one.writer.unreferenced)
                out["compaction_objects"] = one.writer.written.objects
                out["compaction_bytes"] = one.writer.written.bytes
            await asyncio.sleep(0)  # (the push's record written: what is left of it in a step of its own)
            remote = await db.remote(sid)
            if remote is not None and not remote["announced"] and self.ctx.keys.write_secret(sid) is not None:
                # so that the other devices find this device's log, and a rekey keeps it: a writer that
                # has written nothing yet too (a write import that a crash cut short before it was listed)
                await self.members.ensure_member(sid)
            if sid in self._head_again:  # (a repair's head published: no write on the other pushes' way)
                self._head_again.discard(sid)
                if (mend := self.ctx.head_mends.get(sid)) is not None and mend.get("again"):
                    mend = self.ctx.head_mends[sid] = {**mend, "again": False}
                    await db.syncstate.head_mends.note(sid, mend)
            return out

    def _records_of(self, sid: str) -> Callable[[int, int], Awaitable[LogRun]]:
        """This device's operations first..upto of `sid` (what compaction merges)."""
        db = self.ctx.db

        async def load_records(first: int, upto: int) -> LogRun:
            return await db.log_run(sid, db.device_id, first - 1, upto)

        return load_records

    @staticmethod
    async def _key_on_disk(one: _OnePush) -> None:
        """Wait for the session key's file if this push made it (before a revision is recorded)."""
        if one.key_written is not None:
            await asyncio.shield(one.key_written)  # its failure fails the push; a cancelled push leaves it be
            one.key_written = None

    async def _commit_revision(
        self,
        one: _OnePush,
        state: dict,
        levels: list[list[Entry]],
        last: int,
        lamport: int | None,
        *,
        merged: list[bytes] | None = None,
    ) -> int:
        """Record and publish a revision of `levels` (`merged`: the pages a compaction merged away,
        which the revision lets go)."""
        await self._key_on_disk(one)
        if lamport is None:
            lamport = await self.ctx.db.get_lamport(one.sid)
        known = self._published.get(one.sid)
        rev = state["head_rev"]
        known_key = (getattr(one.store, "url", None), one.head_pk, rev)
        current_hash: bytes | None
        if known is not None and known[:3] == known_key:
            current_rev, current_hash = known[2], known[3]
        else:
            seen, lied = 0, False
            try:
                current = await bounded(one.store.get_head(one.head_pk), self.ctx.timeout)
            except (RegistryError, LyingServer) as exc:
                # a head there that does not verify (damaged, forged), or served below a revision seen (rolled
                # back): none, replaced above the highest revision this device published or saw there
                current, seen, lied = None, (exc.seen or 0) if isinstance(exc, HeadRolledBack) else 0, True
            current_rev = max(state["head_rev"], seen, current.revision if current else 0)
            current_hash = manifest_hash_of(current) if current else None
            if (lied or (current is not None and current.revision < rev)) and state.get("head_manifest"):
                # the store serves this device's head forged or rolled back (a repair's, or a push meeting it): the
                # manifest the head this device published names, as recorded with it, is the one the new head
                # follows (let go once it publishes), not the rolled-back head's nor none, in a daemon started
                # since that head's push too (a restart between a repair and its push)
                current_hash = bytes(state["head_manifest"])
        try:
            return await self._commit_at(
                one, current_rev + 1, current_hash, levels, last, lamport, merged, ahead_ok=True
            )
        except _StoreAhead as ahead:
            # Someone published a higher revision of this head since this process last saw it (the
            # store is ahead of what we know): go on from the store's head, as a first commit would.
            log.warning(
                "the store holds a newer head of this device's log than this process published; going on from it",
                extra={"session": one.sid, "rev": ahead.head.revision},
            )
            head = ahead.head
            return await self._commit_at(one, head.revision + 1, manifest_hash_of(head), levels, last, lamport, merged)

    async def _commit_at(
        self,
        one: _OnePush,
        rev: int,
        prev_hash: bytes | None,
        levels: list[list[Entry]],
        last: int,
        lamport: int,
        merged: list[bytes] | None,
        *,
        ahead_ok: bool = False,
    ) -> int:
        prev = CIDV1_RAW_BLAKE3 + prev_hash if prev_hash is not None else None
        plain = encode_manifest(one.sid, one.writer.device, rev, one.head_pk, last, lamport, levels, prev, one.claims)
        made = Revision(rev, plain, last, encode_levels(levels), prev, levels, list(merged or ()))
        crash_point("push:put")  # (tests: the pages put, the revision not recorded)
        await one.store.keep_wanted()  # (a pinning service's pins of the pages: resumed, the push puts none again)
        # fixed before anything of rev is uploaded; what the push put for it (named by it) no longer a gc candidate
        named = (one.url, one.writer.noted) if one.url is not None and one.writer.noted else None
        await self.ctx.db.save_pushed(one.sid, None, named=named, pending=made.pending())
        one.writer.noted = []
        crash_point("push:recorded")  # (tests: the pages put, the revision recorded, its manifest and head not)
        # (the loop is given back here: the manifest's sealing and the head's signing below are a step of
        # their own, not one with the state write before them)
        await asyncio.sleep(0)
        await self._publish(one, made, ahead_ok=ahead_ok)
        return rev

    async def _publish(self, one: _OnePush, made: Revision, *, ahead_ok: bool = False) -> bool:
        """Upload the recorded manifest and publish its head. A head refused as stale (StaleHead) is read:
        if the store holds this very entry (a push retried after a crash), it is done; so too if it holds
        this revision's manifest sealed under a key from before a rekey (a push that read the key before the
        rekey switched it, killed after its head and before its mark), which returns True: the caller
        publishes a new head under the current key. If it holds a higher revision, `ahead_ok` raises
        _StoreAhead so that the commit goes on from it, else SyncError."""
        sid, writer, head_key, head_pk = one.sid, one.writer, one.head_key, one.head_pk
        rev = made.rev
        ct, ref = writer.seal_manifest(made.plain, head_pk, rev)
        await asyncio.sleep(0)  # the sealing and the head's signature in two loop steps (~100 us each)
        entry = RegistryEntry.create(head_key, rev, head_data(ref.hash))
        named, older = ref.hash, False  # the manifest the head names; whether sealed under an older key
        try:  # the manifest, then the head naming it (a folder store: in one batch, the head after the fsyncs)
            await one.store.put_then_set_head([ct], [ref.hash], entry, timeout=self.ctx.timeout)
        except StaleHead:
            self._published.pop(sid, None)
            current = await bounded(one.store.get_head(head_pk), self.ctx.timeout)
            keys = self.ctx.keys.session_keys(sid)[1:]  # (those from before a rekey)
            if current is not None and current.revision == rev and current.data != entry.data:
                older = await published_before(one.store, self.ctx.timeout, keys, head_pk, current, made.plain)
            if older and current is not None:
                named = manifest_hash_of(current)
            elif current is None or current.data != entry.data or current.revision != rev:
                if ahead_ok and current is not None and current.revision > rev:
                    raise _StoreAhead(current) from None
                raise SyncError(
                    f"the store holds a newer head (revision {current.revision if current else '?'}) "
                    f"for this device's log of {sid} that this device did not write"
                ) from None
        await pause_for_tests("push.published")  # (the tests hold it here: the head published, not marked pushed)
        writer.written.objects += 1
        writer.written.bytes += len(ct)
        url, prev = one.url, made.prev
        # What the head let go (the manifest it follows, the pages a compaction merged away), noted for
        # `sessiond gc` (sync/gc.py frees it after its grace period, once no current head references it)
        # in the transaction of the pushed mark: a crash between two writes left it never noted, never freed.
        # So is the manifest put here when the head was found holding this revision under an older key: named
        # by nothing (a restart killed before the mark seals it the same again, and notes it then).
        gone = [prev[len(CIDV1_RAW_BLAKE3) :]] if prev is not None and prev.startswith(CIDV1_RAW_BLAKE3) else []
        if older:  # (the manifest just put, sealed under the current key: the head names the old key's, not it)
            gone.append(ref.hash)
        left = (url, gone + made.merged) if url is not None and (gone or made.merged) else None
        await self.ctx.db.save_pushed(
            sid,
            left,
            pushed_seq=made.seq,
            head_rev=rev,
            tree=made.tree,
            pending=None,
            last_error=None,
            last_push=now(),
            head_manifest=named,
            # (a head left naming an older key's manifest: under a key older than any slot's, OLDER_KEY, so that a
            # kill before the new head that follows here leaves that push owed: rekeyowed.py)
            head_announce=OLDER_KEY if older else one.announce,
        )
        crash_point("push:pushed")
        await asyncio.sleep(0)  # (as above)
        self._published[sid] = (url, head_pk, rev, named)
        if made.levels is not None:
            self._levels[sid] = (made.tree, tuple(tuple(lv) for lv in made.levels))
        log.info(
            "pushed",
            extra={"session": sid, "rev": rev, "objects": writer.written.objects, "bytes": writer.written.bytes},
        )
        self.ctx.on_event({"type": "sync.pushed", "session": sid, "revision": rev, "seq": made.seq})
        return older

    async def _unpin(self, one: _OnePush, hashes: list[bytes]) -> None:
        """Let the store drop the pages a compaction merged away (Store.unpin: a Kubo node's pins, a
        pinning service's pin requests; other stores keep what they hold), once the head no longer
        references them. Nothing else needs them: a reader starts from the current head and never
        walks `prev` to older manifests (docs/FORMATS.md, "Snapshot layout"), a checkpoint proof is a
        hash over messages and names no object, and a group folded into a node is still referenced by
        it (compact lists only merged pages). A reader that read the previous head a moment ago may
        still fetch them: unpinning is not deleting (a node's garbage collection runs much later), and
        and a read that finds one gone fails and is retried from the newer head (sync/follower.py). Old manifests stay
        pinned (the head's `prev` chain). Best effort: a failure is logged, never fails the push. (They
        were noted for gc with the revision's end, in _publish.)"""
        if not hashes:
            return
        try:
            await bounded(one.store.unpin(hashes), self.ctx.timeout)
        except (TimeoutError, StoreError, OSError) as exc:
            log.warning(
                "could not unpin %d objects the log no longer references: %s",
                len(hashes),
                exc,
                extra={"session": one.sid, "objects": len(hashes)},
            )

    async def snapshot_id(self, sid: str) -> dict | None:
        """Where this device's latest snapshot of `sid` is: its head revision and manifest object ids."""
        state = await self.ctx.db.sync_state(sid)
        if not state["head_rev"]:
            return None
        store = await self.ctx.store_for(sid)
        head = await bounded(store.get_head(self.ctx.keys.head_pk(sid)), self.ctx.timeout)
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
    def forget(self, sid: str) -> None:
        """`sid` was deleted here: no repair's head of it is to be published again."""
        self._head_again.discard(sid)

    async def resume_mends(self) -> list[str]:
        """At the start: the heads repairs found served rolled back or forged, as kept (doctor warns of them again),
        and the sessions whose head is still to be published again (a kill between the finding and its push): the
        caller queues their push, forced here (_head_again)."""
        mends = await self.ctx.db.syncstate.head_mends.all()
        self.ctx.head_mends.update(mends)
        again = [sid for sid, m in mends.items() if m.get("again")]
        self._head_again.update(again)
        return again

    async def repair(self, sid: str) -> bool:
        """Reset the push state of `sid` so that its next push sends this device's whole log again, if
        the store lacks any of it, or served its head rolled back or forged (sync/lostlog.py): the push
        publishes the head above the highest revision this device published. A store holding every object
        of the log is given a new head only (a forced push, made here: the sync waiting on it finds nothing
        behind). Returns whether it did (the caller queues the push)."""
        await writes_ended(self.ctx, sid)  # (before the lock: a push or `rm` of it is not held by the wait)
        async with self.ctx.lock(sid):
            if not await self.ctx.db.last_seq(sid):
                return False
            lack = await store_lacks_log(self.ctx, sid)
            if lack is None:
                return False
            if lack.head_only:
                self._head_again.add(sid)
            else:
                await self.ctx.db.save_sync_state(sid, pushed_seq=0, tree=None, pending=None)
                self.ctx.repair.discard(sid)
            self._published.pop(sid, None)
            if lack.how is not None:  # (doctor warns of it: a store that does so again lies; kept across a restart)
                self.ctx.head_mends[sid] = mend = {
                    "store": lack.store,
                    "how": lack.how,
                    "published": lack.published,
                    "served": lack.served,
                    "again": lack.head_only,
                }
                await self.ctx.db.syncstate.head_mends.note(sid, mend)
        log.warning(lack.said(), extra={"session": sid, "event": "repair"})
        if lack.head_only:
            try:
                await self.push(sid)  # (forced: _head_again) a new head now, as a sync waits for it
            except Exception as exc:  # (the queued push tries again, and its failure is said as a push's)
                log.warning("could not publish the head again: %s", describe(exc), extra={"session": sid})
        return True
