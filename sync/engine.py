"""The sync engine: `Syncer` owns the worker loop and composes the parts that do the work.

A session that changes (`notify`) goes to the push queue (schedule.py): pushed at once when quiet,
coalesced with what follows while a push of it is under way or just was, a few workers for all
sessions, backing off per session when the store fails. Beside it one loop lets the follower pull what
other devices wrote, every `poll_interval`. The parts each get the one `SyncContext` (context.py) and
the other parts they call:

    members.py   the members slot (who writes a session)      pusher.py    this device's log -> store
    rekey.py     key rotation, taking another device's rekey   follower.py  pulling other devices' logs
    fetch.py     reading members' logs from the store          importer.py  importing a share code
    gc.py        freeing objects no current head references
    verify.py    checking the store against the database       proofs.py    making and checking checkpoints
    share.py     making share codes                            heads.py     head data, manifest opening
    devices.py   a session's devices as this daemon knows them
    schedule.py  when each session is pushed                   syncstatus.py each session's sync as shown

Syncer keeps the public methods the daemon calls, delegating to the parts. It owns the threads: the
push workers (workers.py, handed to every LogWriter) and the pool in which the checkpoints of an
imported session are checked; both end at stop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence

from ..storage.database import Database
from ..storage.errors import DatabaseLost, LostSaid
from ..storage.model import RemoteLog
from ..stores import Store, StoreError
from ..stores.errors import LyingServer, ReadOnlyStore, failing
from .context import SyncContext
from .devices import session_devices
from .errors import ImportError_, SyncError, describe, store_failed
from .follower import Follower
from .gc import Collector
from .heads import head_data, manifest_hash_of
from .heads import open_manifest as _open_manifest  # noqa: F401 (re-exported for the tests)
from .importer import Importer
from .keys import KeyStore
from .members import Members
from .mirrorstrict import not_every_store, rekey_refused
from .proofs import Proofs
from .pusher import Pusher
from .rekey import Rekeyer
from .republish import Republisher
from .reput import RecordKeeper
from .schedule import PushQueue
from .share import Sharer
from .syncstatus import SyncStatus
from .tasks import stop_tasks, until_deadline
from .verify import Verifier
from .workers import Workers

log = logging.getLogger("sessiond.sync")
# A waited sync's pull the daemon's stop cut short: what its answer says of it (the store is not why)
STOPPED_PULL = "the daemon is stopping: the pull was cut short; it is tried again once the daemon runs"


class Syncer:
    def __init__(
        self,
        db: Database,
        store: Store,
        key_dir: str,
        *,
        interval: float = 2.0,
        push_delay: float = 0.05,
        push_concurrency: int = 4,
        timeout: float = 30.0,
        poll_interval: float = 0.25,
        on_event: Callable[[dict], None] | None = None,
        check_remote: Callable[[RemoteLog], None] | None = None,
    ):
        """`check_remote`: refuses (storage.errors.Invalid) another device's log holding what the API would
        refuse; the daemon passes its validation (daemon/validate.py remote_log). Without it only the
        log's format is checked."""
        self._lost = LostSaid(log, "sync round")  # the follower's rounds failing on the database lost: said once
        self.ctx = ctx = SyncContext(
            db=db,
            store=store,
            keys=KeyStore(key_dir),
            timeout=timeout,
            on_event=on_event or (lambda ev: None),
            workers=Workers(),
            check_remote=check_remote,
        )
        self.interval = interval
        self.push_delay = push_delay
        self.poll_interval = poll_interval
        # checkpoint checks of imports, off the event loop (an import may come before start)
        self._checks: concurrent.futures.ThreadPoolExecutor | None = self._new_pool()
        self.members = Members(ctx)
        self.pusher = Pusher(ctx, self.members)
        self.rekeyer = Rekeyer(ctx, self.members, self.pusher)
        self.follower = Follower(ctx, self.members, self.rekeyer, interval=interval, min_wait=poll_interval)
        self.importer = Importer(ctx, self.members, self._run_check, lambda sid: self.pushes.notify(sid))
        self.verifier = Verifier(ctx, self.members, self.rekeyer)
        self.proofs = Proofs(ctx, self.members)
        self.sharer = Sharer(ctx, self.members, self.rekeyer, self.sync_now, self.last_failure)
        self.collector = Collector(ctx, self.members)
        # heads whose records expire (Kubo), published again in time, or written anew if they expired
        self.republisher = Republisher(
            ctx,
            rewrite_log=lambda sid: self.pusher.push(sid, force=True),
            rewrite_members=self.members.restore,
        )
        # the records of heads it publishes or follows, put again before a DHT forgets them (Kubo: 48 h)
        self.record_keeper = RecordKeeper(ctx)
        # which sessions to push when (schedule.py): coalesced per session, a few workers for all of them
        self.pushes = PushQueue(
            self._push_one,
            gap=push_delay,
            concurrency=push_concurrency,
            failed=lambda sid, exc, delay: self.sync_status.failed(sid, exc, delay),
            done=lambda sid: self.sync_status.pushed(sid),
            first=ctx.shared.__contains__,
        )
        # each push's end, as shown (status, doctor's fix) and as a waited sync_now ends on it
        self.sync_status = SyncStatus(ctx, self.pushes)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._republishing: asyncio.Task | None = None
        self._reputting: asyncio.Task | None = None
        self._behind: set[asyncio.Task] = set()  # a sync's checks and pulls its deadline left running

    # ---------------------------------------------------------------- what the parts share
    @property
    def db(self) -> Database:
        return self.ctx.db

    @property
    def keys(self) -> KeyStore:
        return self.ctx.keys

    @property
    def store(self) -> Store:
        return self.ctx.store

    @store.setter
    def store(self, store: Store) -> None:
        self.ctx.store = store

    @property
    def timeout(self) -> float:
        return self.ctx.timeout

    @staticmethod
    def _new_pool() -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="sessiond-check")

    async def _run_check(self, fn: Callable[[], None]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._checks, fn)

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if self._checks is None:  # started again after a stop
            self._checks = self._new_pool()
        if self.ctx.workers is None:
            self.ctx.workers = Workers()
        self.ctx.shared.update(await self.db.shared_sessions())  # before the pushes: they go first
        self.pushes.start()
        for sid in await self.db.sessions_needing_push():  # resume after a restart
            self.pushes.notify(sid)
        for sid in await self.pusher.resume_mends():  # a repair's head not published again yet (lostlog.py)
            self.pushes.notify(sid)
        self._task = asyncio.create_task(self._run(), name="sessiond-sync")
        self._republishing = asyncio.create_task(self.republisher.run(), name="sessiond-republish")
        self._reputting = asyncio.create_task(self.record_keeper.run(), name="sessiond-reput")

    async def stop(self, wait: float | None = None) -> bool:
        """Stop the engine's work and close its stores, waiting at most `wait` seconds for them (None: for as
        long as they take): a store that hangs (a folder on a network share gone, its write never returning)
        must not hold the daemon's stop past its deadline. What a push under way had not finished is pushed
        again at the next start (nothing recorded it pushed); the heads' records are kept either way. Whether
        the stores ended in time (False: a thread of theirs may still be in a call that never returns)."""
        self.ctx.stopping = True
        self._wake.set()
        ended = True
        try:
            async with asyncio.timeout(wait):
                await self._stop_work()
        except TimeoutError:
            ended = False
            log.warning(
                "the stores did not answer within %.1f s of the stop (a write or read under way that never"
                " returned): stopping without them; what a push had under way is pushed again at the next start",
                wait,
                extra={"event": "sync.stop_late"},
            )
        # The head records the stores handed since the keeper's last look, and those a save the stop cut
        # short had taken: kept, not lost with the process. Last, once nothing that hands one (a push, a
        # pull, a mirror's drain) runs any more; the stores, closed, still hold what they handed.
        try:
            await self.record_keeper.collect()
        except Exception:
            log.exception("keeping the heads' records at the stop failed")
        return ended

    async def _stop_work(self) -> None:
        await stop_tasks([t for t in (self._task, self._republishing, self._reputting, *self._behind) if t is not None])
        await self.pushes.stop()
        if self._checks is not None:
            self._checks.shutdown(wait=False, cancel_futures=True)
            self._checks = None
        if self.ctx.workers is not None:  # the push threads: a cancelled long run winds down first
            workers, self.ctx.workers = self.ctx.workers, None
            await asyncio.to_thread(workers.close)
        await self.ctx.close_stores()

    def release_waits(self) -> None:
        """The daemon is stopping: the requests waiting in sync_now for pushes are answered now (SyncStatus)."""
        self.sync_status.release_waits()

    def notify(self, sid: str) -> None:
        """`sid` changed here: push it (at once when it is quiet, else together with what follows)."""
        self.pushes.notify(sid)

    def forget(self, sid: str) -> None:
        """A session was deleted here: stop pushing it and destroy its key (crypto-shredding)."""
        self.pushes.forget(sid)
        self.ctx.shared.discard(sid)
        self.ctx.pulled.pop(sid, None)  # (its last pull's time: what its idle end waited on)
        self.sync_status.forget(sid)
        self.proofs.forget(sid)
        self.ctx.head_mends.pop(sid, None)  # (its row went with the delete: storage/headlies.py drop_mend)
        self.pusher.forget(sid)
        self.keys.delete_session_key(sid)

    async def forget_unused_credentials(self) -> None:
        """After a session is deleted: the credentials kept for a store that no session syncs through any
        more (the last one imported from it is gone) are deleted too (storecreds.py)."""

        async def in_use() -> list[str]:
            return [self.ctx.store.url, *await self.ctx.db.remote_store_urls()]

        await self.ctx.credentials.pruned(in_use)

    # ---------------------------------------------------------------- the workers
    async def _run(self) -> None:
        """The follower's loop: pull what other devices wrote, every `poll_interval` (at once when
        asked). Pushes do not wait for it: the push queue's workers run beside it."""
        while not self.ctx.stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, min(self.interval, self.poll_interval)))
            except TimeoutError:
                pass
            self._wake.clear()
            if self.ctx.stopping:
                return
            try:
                await self.follower.poll()
            except asyncio.CancelledError:
                raise
            except DatabaseLost as exc:  # (every round, until the daemon's restart: said once)
                self._lost.failed(exc)
            except Exception:  # never let one bad round stop the worker
                log.exception("sync round failed")

    async def _push_one(self, sid: str) -> None:
        if not self.ctx.stopping:
            await self.pusher.push(sid)

    # ---------------------------------------------------------------- API helpers
    async def status(self, sid: str | None = None) -> dict:
        return await self.sync_status.status(sid)

    def pull_failure_kind(self, sid: str) -> str | None:
        """The kind of `sid`'s last pull failure, while it is the last (doctor's fix)."""
        return self.ctx.pull_kinds.get(sid)

    def pull_failure_forks(self, sid: str) -> bool:
        """Whether `sid`'s last pull failed in a way no share code of it gets past, the way on a fork shared anew
        (SyncContext.pull_forks), while it is the last (doctor's fix)."""
        return sid in self.ctx.pull_forks

    def pull_failure(self, sid: str) -> tuple[BaseException, str] | None:
        """The store's own failure and the store's URL when `sid`'s last pull failed for a store that failed
        to answer, while it is the last (doctor's fix, by the failure's class)."""
        return self.ctx.pull_failures.get(sid)

    def pull_failure_fix(self, sid: str) -> str | None:
        """What mends `sid`'s last pull failure beyond its kind's fix (a relay's account: its invite), while it
        is the last."""
        return self.ctx.pull_fixes.get(sid)

    def head_mends(self) -> dict[str, dict]:
        """The sessions whose head a sync found served rolled back or forged by their store and published again
        ({store, how, published, served}; sync/lostlog.py), until a sync's check finds the store holding it whole
        (kept across a restart: storage/headlies.py HeadMends); `deferred` while the last checks since left a store
        unchecked ({store, why, checks, at}: sync/lostlog.py; kept with the mend), the warning kept for want of a
        look, not a loss found."""
        return {sid: {k: v for k, v in m.items() if k != "again"} for sid, m in self.ctx.head_mends.items()}

    def last_failure(self, sid: str) -> BaseException | None:
        """Why `sid`'s last push failed (its class: what mends it), while that failure is still the last."""
        return self.sync_status.last_failure(sid)

    async def store_status(self) -> list[dict]:
        rows = await self.ctx.store_status()
        if len(rows) == 1 and rows[0]["reachable"] is None and rows[0]["url"] == self.ctx.store.url:
            # one store (no mirror, so no outbox health of its own): what its pushes met
            rows[0] |= await self.sync_status.store_health(self.ctx.store.url)
        return rows

    async def repair(self, sid: str) -> bool:
        """Push this device's whole log of `sid` again if the store lacks any of it, and write its members
        slot again if the store lost it and this device wrote it (Members.restore). Returns whether the
        log will be pushed."""
        try:
            await self.members.restore(sid)
        except (ImportError_, StoreError, TimeoutError, OSError) as exc:  # the pull that follows says it
            log.warning("could not write the members slot again: %s", describe(exc), extra={"session": sid})
        if not await self.pusher.repair(sid):
            return False
        self.pushes.notify(sid)
        return True

    async def sync_now(self, sid: str | None, *, wait: bool, timeout: float) -> dict:
        """Push and pull now; waiting, answer within `timeout` seconds however the store fails: the repair
        check before the wait and the pulls after it get the time left, and what it cut short goes on in
        the background (a pull not ended is named in the answer). Not waiting, the repair check is left
        to the background at once."""
        started = time.monotonic()
        deadline = started + timeout if wait else started
        targets = [sid] if sid is not None else await self.db.session_ids()
        stopping = self.sync_status.stopping  # (the daemon's stop answers a waited sync at once: release_waits)
        await self.db.syncstate.head_lies.synced(sid)  # (a lying head found before: its fix has run, verify.py)
        await until_deadline({s: self.repair(s) for s in targets}, deadline, self._behind, until=stopping)
        marks = {s: await self.db.last_seq(s) for s in targets}
        for s in targets:
            self.pushes.now(s)  # "now" means now, not after the gap or the backoff
        self._wake.set()
        pull_errors = self.ctx.pull_errors
        unpulled: set[str] = set()  # sessions whose pull the deadline cut short
        if wait:
            await self.sync_status.wait(sid, marks, deadline)
            # and bring in what the other devices wrote, now
            pulls = {s: self._pull_now(s) for s in targets if await self.db.remote(s) is not None}
            unpulled = await until_deadline(pulls, deadline, self._behind, until=stopping)
        else:
            self.follower.pull_now = True
        states = await self.status(sid)
        result = {s: states[s] for s in targets if s in states}
        for s in unpulled & result.keys():
            why = STOPPED_PULL if stopping.is_set() else await self.sync_status.unpulled_why(s, timeout)
            result[s] = {**result[s], "pull_error": why}
        pushed = all(st["pushed_seq"] >= marks[s] for s, st in result.items())
        complete = pushed and not unpulled and not any(s in pull_errors for s in targets)
        answer = {"complete": complete, "pushed": pushed, "sessions": result}
        if wait and stopping.is_set() and not complete:  # cut short by the stop, not by the store or the timeout
            answer["stopping"] = True
        return answer

    async def _pull_now(self, sid: str) -> None:
        try:
            began = time.monotonic()
            with self.follower.asked():  # (a frozen log's manifest lost: a writer puts it back)
                await self.follower.pull(sid)
            self.ctx.pull_ok(sid, began=began)
        except Exception as exc:
            self.ctx.pull_failed(sid, exc, imported=await self.ctx.imported_elsewhere(sid))

    # ---------------------------------------------------------------- the parts' public methods
    async def push(self, sid: str, *, compact: bool = True, force: bool = False) -> dict:
        return await self.pusher.push(sid, compact=compact, force=force)

    async def snapshot_id(self, sid: str) -> dict | None:
        return await self.pusher.snapshot_id(sid)

    async def pull(self, sid: str) -> int:
        return await self.follower.pull(sid)

    def pulled_since(self, sid: str, since: float) -> bool:
        """Whether a pull of `sid` begun after `since` (time.monotonic()) succeeded in this run; if none did, one
        is asked of the next poll (SyncContext.on_pulled tells of it). A store that cannot be read: never."""
        if self.ctx.pulled.get(sid, -math.inf) > since:
            return True
        self.follower.follow(sid)
        return False

    async def pull_all(self, sids: list[str] | None = None) -> None:
        await self.follower.pull_all(sids)

    async def read_members(
        self, store: Store, sid: str, session_key: bytes, announce_pk: bytes, min_rev: int = 0
    ) -> tuple[int, list[dict], dict | None]:
        return await self.members.read_members(store, sid, session_key, announce_pk, min_rev)

    async def ensure_member(self, sid: str, *, extra: Sequence[dict] = ()) -> int:
        return await self.members.ensure_member(sid, extra=extra)

    @contextlib.asynccontextmanager
    async def _store_refusal(self, sid: str, doing: str) -> AsyncIterator[None]:
        """A store's failure or lie that reaches a share, a rekey or an unshare raw (the members object it
        writes answered another CID, a gateway that takes no writes) as the `store` refusal it is (with its
        details: errors.store_details), not an internal error."""
        try:
            yield
        except (StoreError, TimeoutError, ImportError_) as exc:
            failed = not_every_store(exc)  # a store of a mirror that a rekey's notice needs did not answer
            if failed is not None:
                pending = self.ctx.keys.rekey_pending(sid) is not None
                raise rekey_refused(sid, failed, doing, pending=pending) from None
            if isinstance(exc, ImportError_) or not (failing(exc) or isinstance(exc, (LyingServer, ReadOnlyStore))):
                raise
            raise store_failed(exc, (await self.ctx.store_for(sid)).url, f"cannot {doing} {sid}") from None

    async def share(self, sid: str, *, write: bool, passphrase: str | None, expires_in: float | None) -> dict:
        async with self._store_refusal(sid, "share"):
            return await self.sharer.share(sid, write=write, passphrase=passphrase, expires_in=expires_in)

    async def issued_shares(self, sid: str | None) -> list[dict]:
        return await self.sharer.issued(sid)

    async def unshare(self, sid: str, device: str | None) -> dict:
        async with self._store_refusal(sid, "unshare"):
            return await self.sharer.unshare(sid, device)

    async def devices(self, sid: str) -> dict:
        return await session_devices(self.ctx, self.members, sid)

    async def import_code(self, text: str, passphrase: str | None, store_url: str | None = None) -> dict:
        looks = self.follower.looks
        res = await self.importer.import_code(text, passphrase, store_url)
        if self.follower.looks != looks:  # a poll meanwhile may have dropped a change of it (Follower.follow)
            self.follower.follow(res["session"])
        return res

    async def rekey(self, sid: str, drop: Sequence[str] = ()) -> dict:
        async with self._store_refusal(sid, "rekey"):
            return await self.rekeyer.rekey(sid, drop)

    async def gc(self, *, grace: float, dry_run: bool) -> dict:
        return await self.collector.collect(grace=grace, dry_run=dry_run)

    async def make_checkpoint(self, sid: str) -> dict:
        return await self.proofs.make_checkpoint(sid)

    async def checkpoint_marks(self, sid: str) -> list[dict]:
        return await self.proofs.checkpoint_marks(sid)

    async def checkpoint_asked(self, sid: str) -> dict:
        return await self.proofs.checkpoint_asked(sid)

    async def verify_proof(self, sid: str, proof: dict) -> dict:
        return await self.proofs.verify_proof(sid, proof)

    async def verify(self, sid: str | None = None, *, down: dict[str, str] | None = None) -> dict:
        return await self.verifier.verify(sid, down=down)

    async def verify_session(self, sid: str) -> dict:
        return await self.verifier.verify_session(sid)


__all__ = ["SyncError", "Syncer", "head_data", "manifest_hash_of"]
