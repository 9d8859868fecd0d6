"""When the clean-up runs (daemon/operations.py's expire_due does the ending): at the next session's expiry, not a
whole cleanup_interval later; sooner when a change brings an expiry forward (a new session, a new expiry or idle
timeout, one taken from another device: `session_changed`, `answered`); at once when the wall clock is stepped;
never more than one run a MIN_RUN_GAP. Composed by `Operations`, which gives it the run to make."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable

from ..storage.clock import is_test_clock, wall
from ..storage.database import Database
from ..storage.errors import DatabaseLost, LostSaid

log = logging.getLogger("sessiond")

EXPIRY_SLACK = 0.005  # seconds past a session's expiry the clean-up wakes (so that the session is past it)
# at least this many seconds between two runs of the clean-up loop: each run reads every session that can
# expire (10,000 sessions with idle timeouts ending at scattered times would otherwise have it read them
# all several times a second); sessions due meanwhile end together
MIN_RUN_GAP = 1.0
# the clean-up sleeps on the loop's monotonic clock; it looks at the wall clock at least this often (seconds),
# and a wall clock stepped since it planned its sleep (NTP, a clock set by hand: more than STEP apart from
# the monotonic one) runs it at once: what expired by the step ends (an expires_at; an idle timeout counts real
# time since an activity of this run, which the step moves with it: storage/activity.py), idle timeouts stamped
# before a step back count from it (Database.activity_after), and its next run is planned again on the clock as
# it is now. A daemon a test set a clock for (SESSIOND_TEST_CLOCK_FILE) looks every TEST_WALL_LOOK instead: the
# same look, sooner, so that a test that steps its clock waits a second for it, not ten
WALL_LOOK = 10.0
TEST_WALL_LOOK = 1.0
STEP = 1.0


def wall_look() -> float:
    """How often (seconds) the clean-up's sleep looks at the wall clock for a step."""
    return TEST_WALL_LOOK if is_test_clock() else WALL_LOOK


class CleanupLoop:
    def __init__(
        self, db: Database, *, interval: float, ended: bool, expire: Callable[[], Awaitable[None]], lost: LostSaid
    ):
        self.db = db
        self.interval = interval  # seconds between runs at most (cleanup_interval; 0: no loop)
        self.ended = ended  # ended sessions can expire too (delete_expired: they are deleted)
        self._expire = expire  # a run (Operations._expire_logged: expire_due, its failures logged)
        self._lost = lost
        # sessions created or changed since the loop planned its next run (their expiry may come sooner),
        # and the wake-up that makes it look at them
        self._changed: set[str] = set()
        self._wake = asyncio.Event()
        self.last_run = 0.0  # wall-clock time of the last run (expire_due): what it did not end, it could not
        self.last_run_mono = -math.inf  # the loop's (monotonic) time of it: the gap between runs is measured on it

    def ran(self, t: float) -> None:
        """A run (expire_due) began at wall-clock time `t`."""
        self.last_run = t
        self.last_run_mono = asyncio.get_running_loop().time()

    # the events after which a session may expire sooner than the clean-up loop planned (a new session,
    # a new expiry or idle timeout, one taken from another device, a paused one resumed)
    EXPIRY_EVENTS = frozenset(
        {"session.created", "session.updated", "session.synced", "session.imported", "session.resumed"}
    )

    def session_changed(self, event: dict) -> None:
        """Told every committed event (the daemon's listener): a session that may expire sooner than the
        clean-up loop's next run wakes it, to look at that session (cheap: a set and an Event)."""
        if self.interval and event.get("type") in self.EXPIRY_EVENTS and event.get("session"):
            self._changed.add(event["session"])
            self._wake.set()

    def answered(self, sid: str) -> None:
        """Told a session's questions to its model are over: a run that left it alone as answering, idle
        past its timeout, planned no wake-up for it; its new idle expiry is looked at now."""
        if self.interval:
            self._changed.add(sid)
            self._wake.set()

    async def run(self) -> None:
        """Sessions are ended when they expire, not up to cleanup_interval later: the loop sleeps until
        the next expiry (at most cleanup_interval, and woken by changes that may bring one sooner)."""
        while True:
            try:
                due = await self.db.next_expiry(self.looked_at(), ended=self.ended)
            except asyncio.CancelledError:
                raise
            except DatabaseLost as exc:
                self._lost.failed(exc)
                due = None
            except Exception:
                log.exception("clean-up failed")
                due = None
            await self._sleep_until(due)
            await self._expire()

    async def _sleep_until(self, due: float | None) -> None:
        """Sleep until `due` (wall-clock seconds; None: no session can expire), or cleanup_interval at most.
        A session changed meanwhile whose expiry comes sooner brings the wake-up forward; a step of the wall
        clock (looked for every WALL_LOOK seconds and at each wake-up) ends the sleep at once."""
        loop = asyncio.get_running_loop()
        latest = loop.time() + self.interval
        planned = wall() - loop.time()  # the wall clock against the monotonic one as the sleep is planned
        while True:
            wake_at = latest if due is None else min(latest, loop.time() + due - wall() + EXPIRY_SLACK)
            gap = min(MIN_RUN_GAP, self.interval)  # (a shorter cleanup_interval is the user's choice)
            wake_at = max(wake_at, self.last_run_mono + gap)
            self._wake.clear()
            try:
                await asyncio.wait_for(
                    self._wake.wait(), max(0.0, min(wake_at, loop.time() + wall_look()) - loop.time())
                )
            except TimeoutError:
                if loop.time() >= wake_at:
                    return
            if abs(wall() - loop.time() - planned) > STEP:
                return  # the wall clock was stepped: a run now, and the next planned on the clock as it is
            if not self._wake.is_set():
                continue  # (a look at the wall clock, which has not moved)
            changed, self._changed = self._changed, set()
            for sid in changed:
                try:
                    when = await self.db.expiry_of(sid, ended=self.ended)
                except asyncio.CancelledError:
                    raise
                except DatabaseLost as exc:
                    self._lost.failed(exc)
                    return
                except Exception:
                    log.exception("clean-up failed")
                    return  # look at every session now
                # a session changed or arrived (an import, a pull) past its expiry is looked at once now,
                # whenever its expiry was: one whose expiry lay before the last run (made by another device
                # before this one imported it, or by a clock ahead of the sharer's) was otherwise left active
                # until cleanup_interval. (The loop's own plans pass over an expiry the last run passed: a
                # session it could not end, a read-only import, is not waited on again and again; a change
                # of one is looked at once, as any change is.)
                if when is not None and (due is None or when < due):
                    due = when

    def looked_at(self) -> float:
        """The wall-clock time up to which the last run looked at expiries: its own, or now if the clock was
        stepped back since (an NTP step, a clock set by hand): a session made or changed after the step that
        expires before the last run's time was never looked at, and must not wait for the clock to catch up."""
        return min(self.last_run, wall())
