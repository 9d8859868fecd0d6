"""A shared session's idle end waits for a pull: the clean-up (operations.py) ends a session idle past its
timeout by the writes this device holds, and its end is a synced operation, ended for every device. A device
started after a night, resumed from a suspend, or cut off from its store for a while holds none of what the
others wrote meanwhile: it ended sessions they were using. So one shared (a `remotes` row) that this device
can end is ended as idle only once a pull of it begun after a clean-up run found it idle has succeeded: that
pull brought what the others wrote (activity: no longer idle), or found nothing new (idle indeed). Until then
it is kept and its pull asked of the follower's next poll; the pull's success runs the clean-up again. A store
that cannot be read keeps the session alive. Its own `expires_at` is not waited on: an instant, not idleness.
A write here meanwhile is taken (storage/expiry.py expired_for_writes): not ended, the session is active, and
the write is its activity, which drops its idle end (the next run lists it no more: keep_only)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..storage.clock import wall
from ..storage.database import Database
from ..storage.errors import NOT_WRITABLE
from ..storage.expiry import past_expiry, session_expiry
from ..sync.engine import Syncer


class SharedIdle:
    """The shared sessions a clean-up run found idle and could not end yet (`confirmed`), and the clean-up run
    again (`rerun`, given the session) when a pull of one of them succeeds (`pulled`, SyncContext.on_pulled)."""

    def __init__(self, db: Database, syncer: Syncer, rerun: Callable[[str], None]):
        self.db = db
        self.syncer = syncer
        self.rerun = rerun
        # per session found idle: the idle expiry it was found past, and when (time.monotonic()) it was found
        self._seen: dict[str, tuple[float, float]] = {}

    def pulled(self, sid: str) -> None:
        if sid in self._seen:
            self.rerun(sid)

    def waiting(self, s: dict) -> dict | None:
        """Why session `s` (its dict, as read), past its idle timeout, is still active: a run found it idle and no
        pull of it since has succeeded (`show`, GET /v1/sessions/ID `idle_end_waits`): when it passed its idle
        timeout (`since`), and why its last pull failed (`pull_error`: None while one is under way or asked, or
        none failed). A store gone for good keeps it so: ended then, its end would reach the other devices once
        the store is back, ending a session they used meanwhile. None for any other session."""
        if s["id"] not in self._seen or s["status"] == "ended" or not past_expiry(s, wall()):
            return None
        return {"since": session_expiry(s), "pull_error": self.syncer.ctx.pull_errors.get(s["id"])}

    def keep_only(self, ids: set[str]) -> None:
        """A clean-up run's sessions past their expiry: those found idle before and not among them are
        forgotten (activity came, or they are gone)."""
        self._seen = {sid: v for sid, v in self._seen.items() if sid in ids}

    async def confirmed(self, s: dict) -> bool:
        """Whether session `s` (Expiries.expired's dict), past its idle timeout, may be ended as idle: not
        shared, read-only here (its owner's devices end it), or pulled since a run found it idle."""
        sid = s["id"]
        if s["access"] in NOT_WRITABLE or await self.db.remote(sid) is None:
            return True
        seen = self._seen.get(sid)
        if seen is None or seen[0] != s["expired_at"]:
            seen = self._seen[sid] = (s["expired_at"], time.monotonic())
        if self.syncer.pulled_since(sid, seen[1]):
            del self._seen[sid]
            return True
        return False
