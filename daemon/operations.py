"""What the socket API asks of the daemon beyond the database: the sync engine's calls with their
errors in the API's shape (share, import, rekey, unshare, gc, verify, checkpoints), and the sessions'
upkeep (the automatic checkpoints, `end`, clean-up and expiry). An object the `Daemon` (daemon/server.py)
builds once its database and sync engine are open, given exactly what it uses; the routes call it as
`daemon.ops`. It owns its background tasks (the clean-up loop, the automatic checkpoints): `start()`
begins the loop, `cancel()` cancels them all when the daemon stops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..storage.clock import wall
from ..storage.database import Database
from ..storage.errors import (
    NOT_WRITABLE,
    Conflict,
    DatabaseLost,
    HeldHere,
    Invalid,
    LostSaid,
    NotFound,
    NotPushed,
    SessiondError,
    held_here,
    not_pushed,
    stopping,
)
from ..stores import StoreError
from ..sync.engine import Syncer  # the daemon drives sync; sync never imports the daemon
from ..sync.errors import crash_point
from ..sync.gc import KeptForFrozen
from ..sync.share import ImportError_
from ..sync.unshared import let_go_at_delete
from .cleanuploop import CleanupLoop
from .home import HomeError, normalize_store_url
from .sharedidle import SharedIdle
from .syncrefusals import share_error
from .testhooks import pause_for_tests

log = logging.getLogger("sessiond")


class Operations:
    def __init__(self, db: Database, syncer: Syncer, *, cleanup_interval: float, delete_expired: bool):
        self.db = db
        self.syncer = syncer
        self.cleanup_interval = cleanup_interval  # seconds between expiry runs; 0: none
        self.delete_expired = delete_expired  # an expired session is deleted, not only ended
        self._tasks: set[asyncio.Task] = set()  # the clean-up loop, automatic checkpoints under way
        self._checkpoint_lock = asyncio.Lock()  # one checkpoint at a time (automatic ones, `end`'s final one)
        self._due: set[asyncio.Task] = set()  # the automatic checkpoints scheduled and not made yet
        self._expirer: asyncio.Task | None = None  # expire_due run for writes that met an expired session
        self._expire_again = False  # one more such run asked for while one is under way
        # expired sessions kept as holding writes no other device has (revoked): said once each in the log
        self._kept_warned: set[str] = set()
        # shared sessions a run found idle past their timeout, ended once pulled since (sharedidle.py)
        self.shared_idle = SharedIdle(db, syncer, self.expired_on_write)
        self._lost = LostSaid(log, "clean-up")  # its runs failing on the database lost under the daemon: said once
        # when the clean-up runs (its next expiry, changes, clock steps); told of changes by the daemon's listener
        self.schedule = CleanupLoop(
            db, interval=cleanup_interval, ended=delete_expired, expire=self._expire_logged, lost=self._lost
        )
        self.session_changed = self.schedule.session_changed
        self.answered = self.schedule.answered
        # whether a question to a session's model is under way (the daemon's Answering.busy): not idle then
        self.answering: Callable[[str], bool] = lambda sid: False
        # the sessions being deleted, ended or revoked, which a question to their model waits for (the database's)
        self.closing = db.closing

    def start(self) -> None:
        """The clean-up loop, if configured (the daemon calls this once it serves)."""
        if self.cleanup_interval:
            self._spawn(self.schedule.run())

    def cancel(self) -> None:
        """Cancel every background task (the daemon stopping)."""
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---------------------------------------------------------------- sync, sharing
    async def sync_status(self, sid: str) -> dict:
        return (await self.syncer.status(sid)).get(sid, {})

    async def delete_session(
        self,
        sid: str,
        *,
        idle_before: float | None = None,
        unpushed_ok: bool = True,
        said: dict | None = None,
        holding_only: tuple[int, int] | None = None,
        busy: Callable[[str], bool] | None = None,
    ) -> KeptForFrozen | bool:
        """Delete a session, its key files too; `idle_before` (a clean-up's): only if it is still idle since
        before then, and its model is not answering (looked at again here, in the deleting transaction: a
        question may have begun since the clean-up's list; Sessions.delete). `unpushed_ok` False (`rm`
        without --force): a shared session with changes of this device its store has not taken is refused
        (409 not_pushed), as they would be lost for every device it is shared with. Whether it was deleted (False),
        and if so what it kept in the store for good (a slot pins this device's log as a rekey froze it:
        Collector.kept_at_delete), or True. `said` (rm's): filled with what the answer names of what stays in the
        store (`kept_in_store`, `left_in_store`). `holding_only` (an OpenAI request's, of the session it made: the
        lamports of its question's messages): only if nothing else was written to it, nor was it shared
        (Sessions.delete); `busy` (its): only if that says no question to its model is under way, looked at in the
        deleting transaction (a question that comes after it waits for the delete's outcome: storage/closing.py)."""
        # In turn with the session's push: a push under way ends before its key is destroyed, so none
        # can make a new key for a session that is gone (a stray key an import would have to discard).
        # Marked as being deleted from its transaction until its rows are committed: a question to its model
        # meanwhile waits for the outcome (storage/closing.py). Not before the lock: a push to a store that is down
        # holds it for minutes, and a question would wait for that store (one that comes before the
        # transaction goes on, as one that came before the delete does).
        await pause_for_tests("delete.lock")  # (the tests hold a delete where it waits for the session's push)
        async with self.syncer.ctx.lock(sid):
            if not unpushed_ok and (refused := await self._unpushed(sid)) is not None:
                raise refused  # (under the lock: a push under way has ended, and taken what it took)
            # what it keeps in the store for good (a slot pins them): read before the mark, as the slot's read may
            # wait on its store (one store timeout at most; a failure keeps them all)
            kept = await self.syncer.collector.kept_at_delete(sid)
            # what it lets go in the store, a session no other device can read (sync/unshared.py): read here too
            let_go = await let_go_at_delete(self.syncer.ctx, self.syncer.collector, sid)
            with self.closing.marked(sid):
                # this device's head key for it, whose kept IPNS record goes with its rows (storage/keptrecords.py)
                own = self.syncer.keys.head_pk(sid)
                if busy is None and idle_before is not None:
                    busy = self.answering
                keep = (True if kept.hashes is None else kept.hashes) if kept is not None else False
                if not await self.db.delete_session(
                    sid,
                    idle_before=idle_before,
                    head_pk=own,
                    busy=busy,
                    keep_objects=keep,
                    kept=kept.noted() if kept is not None and kept.objects else None,
                    let_go=let_go.noted() if let_go is not None else None,
                    holding_only=holding_only,
                ):
                    return False
                crash_point("delete.rows")
                self.syncer.forget(sid)
        await self.syncer.forget_unused_credentials()
        if said is not None:
            if let_go is not None and (left := let_go.left()) is not None:
                said["left_in_store"] = left
            if kept is not None and kept.objects:
                said["kept_in_store"] = kept.said()
        if kept is None or not kept.objects:
            return True
        log.info(
            "a deleted session's objects kept in the store: %s",
            kept.why,
            extra={"session": sid, "event": "delete", "objects": kept.objects},
        )
        return kept

    async def remove(self, sid: str, *, force: bool) -> dict:
        """`rm`: delete a session. A shared one holding changes of this device not pushed yet has them pushed
        first (its push may only not have come yet), waiting as long as a store call may take (store_timeout)
        as `end` does; if they still wait (the store down), it is refused unless `force` (delete_session's
        `unpushed_ok`). What the answer names of what stays in the store: what it kept there for good, and why
        (`kept_in_store`, KeptForFrozen.said), and what its store's head unread left there (`left_in_store`)."""
        if not force and (refused := await self._unpushed(sid)) is not None:
            if isinstance(refused, HeldHere):
                raise refused  # (no push sends them: only a new code imported does)
            res = await self.syncer.sync_now(sid, wait=True, timeout=self.syncer.timeout)
            if not res["pushed"] and res.get("stopping"):
                raise stopping(
                    f"session {sid} was not deleted, its changes written here not all pushed yet",
                    f"`sessiond rm {sid}` again (or `sessiond rm {sid} --force` to delete it without them)",
                )
        said: dict = {}
        await self.delete_session(sid, unpushed_ok=force, said=said)
        return said

    async def _unpushed(self, sid: str) -> NotPushed | None:
        """The refusal (not_pushed) of a delete of shared session `sid` while it holds changes of this device
        that no push has taken, else None. One a rekey left this device out of: refused (held_here) while it
        holds what this device wrote after the rekey read its log, which no other device has."""
        if (held := await self.db.held_here(sid)) is not None:
            return held_here(sid, held)
        remote = await self.db.remote(sid)
        if remote is None or (await self.db.get_session(sid)).get("access") in NOT_WRITABLE:
            return None  # not shared (no device waits for its changes), or nothing of this device's goes out
        pending = (await self.db.all_sync_states([sid])).get(sid, {}).get("pending") or 0
        return not_pushed(sid, pending) if pending > 0 else None

    async def sync_now(self, sid: str | None, *, wait: bool, timeout: float) -> dict:
        if sid is not None:
            await self.db.get_session(sid)
        return await self.syncer.sync_now(sid, wait=wait, timeout=timeout)

    async def share(self, sid: str, *, write: bool, passphrase: str | None, expires_in: float | None) -> dict:
        try:
            return await self.syncer.share(sid, write=write, passphrase=passphrase, expires_in=expires_in)
        except ImportError_ as exc:
            raise share_error(exc) from None

    async def import_code(self, code: str, passphrase: str | None, store: str | None = None) -> dict:
        """`store`: where the session is, when neither this daemon's store nor the code's hints hold it."""
        try:
            url = normalize_store_url(store) if store is not None else None
        except HomeError as exc:
            raise Invalid(f"store: {exc}") from None
        try:
            return await self.syncer.import_code(code, passphrase, url)
        except ImportError_ as exc:
            raise share_error(exc) from None

    async def rekey(self, sid: str, drop: list[str]) -> dict:
        try:
            return await self.syncer.rekey(sid, drop)
        except ImportError_ as exc:
            raise share_error(exc) from None

    async def issued_shares(self, sid: str | None) -> dict:
        return {"shares": await self.syncer.issued_shares(sid)}

    async def unshare(self, sid: str, device: str | None) -> dict:
        try:
            return await self.syncer.unshare(sid, device)
        except ImportError_ as exc:
            raise share_error(exc) from None

    async def devices(self, sid: str) -> dict:
        return await self.syncer.devices(sid)

    async def gc(self, *, grace: float, dry_run: bool) -> dict:
        return await self.syncer.gc(grace=grace, dry_run=dry_run)

    async def verify(self, sid: str | None) -> dict:
        if sid is not None:
            await self.db.get_session(sid)
        return await self.syncer.verify(sid)

    # ---------------------------------------------------------------- session management (issue 5)
    def schedule_checkpoint(self, sid: str, *, marks: bool = True) -> None:
        """Checkpoints every N tokens: made right after the append that passed the mark was answered, one at
        a time: one per append that passed a mark, each over the conversation as it stood right after it
        (`marks`; those of the appends that came meanwhile too: Proofs.checkpoint_marks), or (an import's)
        one over the conversation as it is."""
        task = self._spawn(self._auto_checkpoint(sid, marks))
        self._due.add(task)
        task.add_done_callback(self._due.discard)

    async def finish_checkpoints(self, timeout: float) -> None:
        """Wait (up to `timeout` seconds) for the automatic checkpoints scheduled so far: the daemon stopping
        makes them before it cancels its tasks. Cancelled, a checkpoint whose mark an append passed would
        wait for the next start (finish_marks) or the session's next mark, whose task makes it first."""
        if self._due:
            await asyncio.wait(set(self._due), timeout=timeout)

    async def _auto_checkpoint(self, sid: str, marks: bool) -> None:
        async with self._checkpoint_lock:
            crash_point("checkpoint.auto")  # (tests: the append that made it due committed, its checkpoint not)
            try:
                if marks:
                    await self.syncer.checkpoint_marks(sid)
                else:
                    await self.syncer.make_checkpoint(sid)
            except Exception as exc:  # never fatal: the next mark's task makes those still due, in order
                log.warning("automatic checkpoint failed", extra={"session": sid, "error": str(exc)})

    async def checkpoint(self, sid: str) -> dict:
        try:
            proof = await self.syncer.checkpoint_asked(sid)
        except ImportError_ as exc:
            raise share_error(exc) from None
        await self.db.openai_made.given(sid)  # (a proof given of a session a request made: no start deletes it)
        return proof

    async def verify_proof(self, sid: str, proof: dict) -> dict:
        await self.db.get_session(sid)
        try:
            return await self.syncer.verify_proof(sid, proof)
        except ImportError_ as exc:
            raise share_error(exc) from None

    async def _end(self, sid: str, *, expired_at: float | None = None) -> dict:
        """End a session with its final checkpoint (`end`, and expiry: both are its end; `expired_at`: when
        the expiry that ends it came, which its end records)."""
        # marked as being ended until its end is committed: a question to its model meanwhile waits for the
        # outcome (storage/closing.py), and is refused as an ended session's, nothing asked
        with self.closing.marked(sid):
            async with self._checkpoint_lock:  # two ends at once: one final checkpoint
                was = (await self.db.get_session(sid))["status"]
                if expired_at is not None:
                    await pause_for_tests("end.checked")  # (the tests hold an expiry's end here, before its commit)
                # an expiry's end of one written to since its expiry was found (a shared one's idle end waited for
                # its pull, which took a write here meanwhile: storage/expiry.py expired_for_writes) is refused in
                # the end's transaction, as NoLongerExpired: the session stays active
                session = await self.db.set_status(sid, "ended", expired_at=expired_at)
        crash_point("end.ended")
        # ending an ended session changes nothing: the same answer, no second final checkpoint
        if was != "ended" and session["access"] not in NOT_WRITABLE and await self.db.last_seq(sid):
            try:
                await self.syncer.make_checkpoint(sid)
            except ImportError_:
                pass
        return session

    async def finish_ends(self) -> None:
        """The final checkpoints an `end` or an expiry did not make: `_end` commits the session's end, then
        makes its checkpoint, and a crash between the two (kill -9) left an ended session without its final
        proof, which nothing made later (the session is ended: `end` again and the clean-up pass it by).
        Made at start, before the socket serves."""
        for sid in await self.db.unproven_ends():
            log.warning(
                "a session's end was cut short before its final checkpoint (the daemon stopped part-way): "
                "making it now",
                extra={"session": sid},
            )
            try:
                await self.syncer.make_checkpoint(sid)
            except (ImportError_, SessiondError) as exc:
                log.warning(
                    "could not make an ended session's final checkpoint", extra={"session": sid, "error": str(exc)}
                )

    async def finish_marks(self) -> None:
        """The automatic checkpoints a crash lost: an append passed a session's checkpoint mark, and the
        daemon died (kill -9) before the checkpoint it scheduled in memory was made. Each is made now, over
        the conversation as it stood right after that append (storage/missedmarks.py), so that it is the
        proof the daemon would have made. At start, before the socket serves."""
        for sid, _ in await self.db.missed_checkpoints():
            log.warning(
                "a checkpoint due at a session's token mark was not made (the daemon stopped part-way): making it now",
                extra={"session": sid},
            )
            try:  # as on time: one per mark passed (checkpoint_marks)
                await self.syncer.checkpoint_marks(sid)
            except (ImportError_, SessiondError) as exc:
                log.warning("could not make a missed checkpoint", extra={"session": sid, "error": str(exc)})

    async def end(self, sid: str) -> dict:
        """End a session: a final checkpoint, everything pushed, and the proofs and snapshot id returned."""
        session = await self._end(sid)
        res = await self.syncer.sync_now(sid, wait=True, timeout=self.syncer.timeout)  # (store_timeout, as rm)
        snapshot = None  # an end not pushed is in no snapshot yet: none named (not the store's older one)
        if res["pushed"]:
            try:
                snapshot = await self.syncer.snapshot_id(sid)
            except (TimeoutError, StoreError, OSError) as exc:  # the session has ended all the same
                log.warning("could not read an ended session's snapshot", extra={"session": sid, "error": str(exc)})
        return {
            **session,
            "tokens_used": (await self.db.get_session(sid))["tokens_used"],
            "checkpoints": await self.db.checkpoints(sid),
            "snapshot": snapshot,
            "pushed": res["pushed"],  # (its pushes: a pull that failed meanwhile is not the end's)
            **({"stopping": True} if res.get("stopping") and not res["pushed"] else {}),  # (the stop's doing)
        }

    async def cleanup(self, older_than: float, *, dry_run: bool) -> dict:
        """Delete the sessions idle since before `older_than` seconds ago. Each is deleted only if it still is
        (written to since it was listed: it stays), and one deleted meanwhile is passed by; the answer lists
        those deleted (with `dry_run`, those that would be)."""
        idle_before = wall() - older_than
        # a session whose model is answering is not idle: that answer is its activity (as for its idle timeout)
        victims = [v for v in await self.db.older_than(idle_before) if not self.answering(v["id"])]
        # a shared session holding changes no push has taken is kept: deleted, they would be lost for every
        # device it is shared with (as `rm` refuses it); named with why, in `kept`
        kept: list[dict] = []
        if dry_run:
            would: list[dict] = []
            for v in victims:
                refused = await self._unpushed(v["id"])
                if refused is None:
                    would.append(v)
                else:
                    kept.append({**v, "reason": refused.message})
            return {"sessions": would, "deleted": False, **({"kept": kept} if kept else {})}
        await pause_for_tests("cleanup.listed")  # (the tests hold the clean-up between its list and its deletes)
        deleted = []
        for v in victims:
            try:
                if await self.delete_session(v["id"], idle_before=idle_before, unpushed_ok=False):
                    deleted.append(v)
            except NotPushed as exc:
                kept.append({**v, "reason": exc.message})
            except NotFound:
                continue  # (deleted meanwhile)
        return {"sessions": deleted, "deleted": True, **({"kept": kept} if kept else {})}

    async def _expire_logged(self) -> None:
        try:
            await self.expire_due()
        except asyncio.CancelledError:
            raise
        except DatabaseLost as exc:
            self._lost.failed(exc)
        except Exception:
            log.exception("clean-up failed")

    def expired_on_write(self, sid: str) -> None:
        """A write found session `sid` past its expiry (the database refused it): the sessions due are ended
        now, as the clean-up would at its next run (expire_due), not up to cleanup_interval later. Writes
        meeting it meanwhile ask for one more run, not one each."""
        self._expire_again = True
        if self._expirer is None or self._expirer.done():
            self._expirer = self._spawn(self._expire_while_asked())

    async def _expire_while_asked(self) -> None:
        while self._expire_again:
            self._expire_again = False
            await self._expire_logged()

    async def expire_due(self) -> list[str]:
        """End sessions past their expiry or idle timeout; delete them too if configured. Deleted or not,
        a session is ended first (with its final checkpoint), and with delete_expired its end is pushed
        before its copy here goes: the devices it was shared with keep theirs, and see it ended.

        With delete_expired, a session past its expiry that is ended already is deleted too: one whose
        expiry ended it and a crash (kill -9) stopped before its delete, which nothing would delete later
        otherwise (its end is pushed first, in case the crash came before that), and one a user ended
        before its expiry (its expiry says how long it is kept, as for one not ended)."""
        done, ended = [], []
        t = wall()
        self.schedule.ran(t)
        if await self.db.activity_after(t):  # (the clock stepped back: idle timeouts count from now)
            log.warning("the clock was stepped back: idle timeouts count from now", extra={"event": "expire"})
        due = await self.db.expired(t, ended=self.delete_expired)
        self.shared_idle.keep_only({s["id"] for s in due})
        for s in due:
            try:
                if s["status"] != "ended" and not _past(s["expires_at"], t):
                    if self.answering(s["id"]):
                        continue  # idle past its timeout, but its model is answering: that answer is its activity
                    if not await self.shared_idle.confirmed(s):
                        continue  # shared, and not pulled since it was found idle: what the others wrote may keep it
                    await pause_for_tests("expire.confirmed")  # (the tests hold it here: idle confirmed, not ended)
                if self.delete_expired and s["access"] == "revoked" and await self._kept_as_held(s["id"]):
                    continue
                if s["status"] == "ended":  # (delete_expired only)
                    if s["access"] not in NOT_WRITABLE:
                        ended.append(s["id"])
                    done.append(s["id"])
                    continue
                try:
                    await self._end(s["id"], expired_at=s["expired_at"])
                    ended.append(s["id"])
                except Conflict:  # a read-only import: its owner's devices end it; deleted here if configured
                    if not self.delete_expired:
                        raise
                done.append(s["id"])
            except SessiondError:
                continue
            except Exception:  # one session that cannot be ended must not keep the others from it
                log.exception("could not expire a session", extra={"session": s["id"]})
                continue
        if self.delete_expired and done:
            pushed = await asyncio.gather(
                *(self.syncer.sync_now(sid, wait=True, timeout=self.syncer.timeout) for sid in ended),
                return_exceptions=True,
            )
            if self.syncer.sync_status.released:  # the daemon is stopping: its waits ended before the pushes;
                return []  # the next start's expiry pushes these ends and deletes them (ended, past their expiry)
            for sid, res in zip(ended, pushed, strict=True):
                if not (isinstance(res, dict) and res.get("complete")):
                    log.warning("an expired session is deleted before its end was pushed", extra={"session": sid})
            crash_point("expire.pushed")
            for sid in done:
                try:
                    await self.delete_session(sid)
                except SessiondError:
                    continue  # (deleted meanwhile)
        if done:
            log.info("expired sessions", extra={"event": "expire", "objects": len(done)})
        return done

    async def _kept_as_held(self, sid: str) -> bool:
        """Whether expired session `sid`, one a rekey left this device out of (it cannot be ended: refused as
        revoked), holds writes no other device has (Database.held_here): then it is kept, not deleted, as `rm`
        refuses it, and the log says why (once a session: each run lists it again)."""
        held = await self.db.held_here(sid)
        if held is None:
            return False
        if sid not in self._kept_warned:
            self._kept_warned.add(sid)
            log.warning(
                "an expired session is kept, not deleted: %s", held_here(sid, held).message, extra={"session": sid}
            )
        return True


def _past(expires_at, t: float) -> bool:
    """Whether a session's own expiry (`expires_at`, not its idle timeout) has passed at `t`."""
    return isinstance(expires_at, (int, float)) and expires_at <= t
