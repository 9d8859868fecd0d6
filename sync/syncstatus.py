"""What the daemon is told of each session's sync (`Syncer.status`), and how a waited sync ends.

The push queue (schedule.py) tells this of each push's end: a failure is shown (its message, and the
`sync.error` event) and its cause kept for doctor's fix while it is the last; one that waiting does not
mend (a full store, refused credentials: stores/errors.settled) is noted with when, so that a waited
sync (`Syncer.sync_now`, through `wait`) ends on it at once instead of running out its timeout. A push's
end wakes who waits for pushes of its session and of all, not every waiter.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..storage.redact import scrub_text
from ..stores.errors import (
    MOVE_STORE,
    LyingServer,
    StoreTimeout,
    describe_failure,
    failing,
    failure_kind,
    settled,
    way_on,
)
from .context import SyncContext
from .errors import describe
from .fetch import BEHIND
from .schedule import PushQueue

log = logging.getLogger("sessiond.sync")


class SyncStatus:
    def __init__(self, ctx: SyncContext, pushes: PushQueue):
        self.ctx = ctx
        self.pushes = pushes
        self._errors: dict[str, str] = {}
        self._causes: dict[str, BaseException] = {}  # the failure behind each of _errors (doctor's fix)
        # sessions whose last push failed in a way waiting does not mend (a full store, refused credentials:
        # stores/errors.settled), with when: sync_now's wait ends on them instead of running out its timeout
        self._settled: dict[str, float] = {}
        # who waits in sync_now for pushes to end, by the session waited for (None: all of them): a
        # push's end wakes the waiters of its session and of all, not every waiter (16 shares at once
        # woke on every other session's push, each to read its state again: ~10 wakes per share)
        self._waiters: dict[str | None, set[asyncio.Event]] = {}
        self._went_through = False  # a push went through since the start (store_health: reachable)
        self.released = False  # the daemon is stopping: no wait goes on (release_waits)
        self.stopping = asyncio.Event()  # (the same, for who waits on it: a waited sync's repair check and pulls)

    def forget(self, sid: str) -> None:
        self._errors.pop(sid, None)
        self._causes.pop(sid, None)
        self._settled.pop(sid, None)

    # ---------------------------------------------------------------- told by the push queue
    async def failed(self, sid: str, exc: BaseException, delay: float) -> None:
        msg = describe(exc)
        if MOVE_STORE in msg:  # (a session imported through another store: moving this device's does not help)
            msg = way_on(msg, await self.ctx.imported_elsewhere(sid))
        self._errors[sid] = msg
        self._causes[sid] = exc.with_traceback(None)  # its class and message, not every frame it passed
        if settled(exc):
            self._settled[sid] = time.monotonic()
        else:
            self._settled.pop(sid, None)
        try:
            await self.ctx.db.save_sync_state(sid, last_error=msg)
        except Exception:
            pass
        log.warning("push failed; retrying in %.1fs", delay, extra={"session": sid, "error": msg})
        event: dict = {"type": "sync.error", "session": sid, "error": msg, "retry_in": round(delay, 2)}
        if self.pushes.paced(sid):
            event["retry_after"] = True  # the store asked for this wait (Retry-After)
        if settled(exc):
            event["settled"] = True  # waiting does not mend it: a waited sync (sync_now) ends on it at once
        self.ctx.on_event(event)
        await self.pushed(sid)

    async def pushed(self, sid: str) -> None:
        if sid not in self.pushes.retry_at:  # it went through: the error shown is over
            self.forget(sid)
            self._went_through = True
        for key in (sid, None):
            for ev in self._waiters.get(key, ()):
                ev.set()

    def release_waits(self) -> None:
        """The daemon is stopping: every wait in sync_now ends now, and any to come ends at once (its request
        is answered with what is pushed so far), rather than holding the stop until its timeout."""
        self.released = True
        self.stopping.set()
        for waiting in self._waiters.values():
            for ev in waiting:
                ev.set()

    # ---------------------------------------------------------------- what is shown
    async def status(self, sid: str | None = None) -> dict:
        db = self.ctx.db
        states = await db.all_sync_states(None if sid is None else [sid])
        pull_errors = self.ctx.pull_errors
        behind = await db.peers_in_error(BEHIND, None if sid is None else [sid])
        for s, st in states.items():
            if s in self._errors:
                st["last_error"] = self._errors[s]
            if s in self.pushes.retry_at:
                st["retry_in"] = round(max(0.0, self.pushes.retry_at[s] - time.monotonic()), 2)
            if self.pushes.paced(s):
                st["retry_after"] = True  # retry_in is the store's own Retry-After, not our backoff
            if s in pull_errors:
                st["pull_error"] = pull_errors[s]
            if s in behind:  # writers away through the latest rekey: their messages come once they take it
                st["waiting_for"] = behind[s]
            st["state"] = (
                "error"
                if (st.get("last_error") and st["pending"]) or st.get("pull_error")
                else ("pending" if st["pending"] else "synced")
            )
        return states

    async def store_health(self, url: str) -> dict:
        """What the pushes say of the daemon's one store at `url` (no mirror: no outbox of its own, its pushes
        wait in each session's sync state), for status's `stores`: unreachable while a session's last push
        through it failed on the store (down, hung, refusing, lying: the failure, its message and the retry),
        reachable once a push has gone through and none is failing so, not known before any push."""
        for sid, exc in list(self._causes.items()):
            if not (failing(exc) or isinstance(exc, LyingServer)):
                continue  # (an answer about content, or no store failure at all: the store answered)
            remote = await self.ctx.db.remote(sid)
            if remote is not None and remote["store_url"] and remote["store_url"] != url:
                continue  # (a session imported through another store)
            row: dict = {
                "reachable": False,
                "failure": "answering what does not verify" if isinstance(exc, LyingServer) else failure_kind(exc),
                "last_error": self._errors.get(sid),
            }
            if sid in self.pushes.retry_at:
                row["retry_in"] = round(max(0.0, self.pushes.retry_at[sid] - time.monotonic()), 2)
            if self.pushes.paced(sid):
                row["retry_after"] = True  # retry_in is the store's own Retry-After
            return row
        return {"reachable": True} if self._went_through else {}

    def last_failure(self, sid: str) -> BaseException | None:
        """Why `sid`'s last push failed (its class: what mends it), while that failure is still the last."""
        return self._causes.get(sid)

    def server_wait(self, sid: str) -> float | None:
        """Seconds left of the wait the store asked for (Retry-After) before `sid` is pushed again."""
        until = self.pushes.server_until.get(sid)
        left = until - time.monotonic() if until is not None else None
        return left if left is not None and left > 0 else None

    # ---------------------------------------------------------------- a waited sync
    async def wait(self, sid: str | None, marks: dict[str, int], deadline: float) -> None:
        """Wait, until `deadline` at most, for the sessions of `marks` (`sid`'s, or all: None) to be pushed up
        to their marks: see `done`."""
        asked = time.monotonic()
        few = [sid] if sid is not None else None  # one session: read its state alone on each wake
        told: set[str] = set()  # sessions whose wait for the store's Retry-After was announced

        async def done() -> bool:
            """Everything asked for is pushed, or what is not failed since it was asked in a way that
            waiting does not mend (then the answer says why, at once, rather than after `timeout`), or
            the store asked (Retry-After) not to be tried again before the deadline has passed."""
            states = await self.ctx.db.all_sync_states(few)
            behind = [s for s, m in marks.items() if s in states and states[s].get("pushed_seq", 0) < m]
            over = True
            for s in behind:
                if self._settled.get(s, -1.0) >= asked:
                    continue
                wait = self.server_wait(s)
                if wait is not None and s not in told:  # who waits (`sync --wait`) is told why, and how long
                    told.add(s)
                    self.ctx.on_event(
                        {
                            "type": "sync.waiting",
                            "session": s,
                            "retry_in": round(wait, 2),
                            "deadline_in": round(max(0.0, deadline - time.monotonic()), 2),
                            "error": self._errors.get(s),
                        }
                    )
                if wait is None or time.monotonic() + wait <= deadline:
                    over = False
            return over

        woken = asyncio.Event()  # (set by pushed; registered before the first look: no wake is lost)
        self._waiters.setdefault(sid, set()).add(woken)
        try:
            while not self.released and not await done():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(woken.wait(), timeout=min(left, 0.5))
                except TimeoutError:
                    pass
                woken.clear()  # (what set it is seen by the next look)
        finally:
            waiting = self._waiters[sid]
            waiting.discard(woken)
            if not waiting:
                del self._waiters[sid]

    async def unpulled_why(self, sid: str, timeout: float) -> str:
        """Why `sid`'s pull did not end within a sync's `timeout`: the store's own answer if it gave one that
        is not a hang (unreachable, refusing, ...: its last pull failed so, or else its push), as a pull says
        it; else that the store is slow. (A store that answers so is no slower for it: the timeout is not why.)"""
        later = "; the pull goes on in the background"
        if self.ctx.pull_kinds.get(sid) == "store" and sid in self.ctx.pull_errors:
            return self.ctx.pull_errors[sid] + later
        cause = self._causes.get(sid)
        if cause is not None and failing(cause) and not isinstance(cause, (StoreTimeout, TimeoutError)):
            url = (await self.ctx.store_for(sid)).url  # (a session's store_url None: this daemon's own store)
            return scrub_text(describe_failure(cause, url)) + later
        return (
            f"the pull did not end within the sync's timeout of {timeout:g} s (the store is slow or not answering)"
            + "; it goes on in the background"
        )
