"""When each session is pushed: appends coalesce into few pushes, and pushes of many sessions share a
bounded set of workers.

A session that changes is pushed at once when it is quiet: nothing of it in flight, and its last push
started at least `gap` seconds ago. Otherwise its changes wait and go together in one push (one page,
one manifest, one head): after the push in flight ends, or `gap` after the last one started. Under
load the window widens by itself: the sessions that are due wait in one queue served by `concurrency`
workers, and everything appended to a session while it waits goes in its one push. So a session that
keeps changing sees at most one push per `gap` (plus the time a push takes), and the first append after
a quiet spell is not delayed at all.

The gap is for coalescing while a session is busy, not for holding back its last change: a session
waiting out its gap that has had no change for QUIET of the gap (a quarter: 0.25 s at the 1 s cap) goes
at once. So when the writes stop, what they left is pushed within that quarter, not up to a whole gap
later; a session written faster than that (a stream of appends) still waits out its gap and goes in one
push.

The gap adapts to how many sessions are busy: with `active` sessions pushed in the last WINDOW seconds,
a session's next push waits `active / pushes_per_second` (at least `gap`, at most `max_gap`). So the
pushes of all sessions together stay near `pushes_per_second` however many clients write (16 clients
appending to 16 sessions: 16 pushes a second, each carrying that second's appends, instead of 160 of
a few appends each), and a change still reaches the store within `max_gap` plus a push.

Shared sessions go first: when more sessions are due than the workers can take (a device writing to
thousands of sessions at once), those another device follows (`first(sid)`: the session was shared or
imported) are taken before the ones that only this device reads, so followers keep seeing changes within
`max_gap` plus a push while a backlog of unshared sessions waits. Within each kind, first come, first
served.

A failed push keeps the session queued and retries it with exponential backoff (0.2 s doubling, at most
30 s); `now` skips the wait (a `sessiond sync` asked for it). A store that answered 429 or 503 with a
Retry-After is not asked again before then (capped: stores/errors.py MAX_SERVER_WAIT), `now` or not:
`server_until` says until when, for `status` and `sessiond sync --wait` (a `Retry-After: 0` asks for no
wait: the retry is our backoff's, which `now` skips). Nothing here is durable, nor needs to be:
what to push is in SQLite (a session's log past its pushed mark, sync_state's outbox), and the engine
queues every session with unpushed operations when it starts.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from collections.abc import Awaitable, Callable

from ..stores.errors import server_wait
from .tasks import stop_tasks

log = logging.getLogger("sessiond.sync")

RETRY_FIRST = 0.2  # seconds before the first retry of a failed push; doubles per failure
RETRY_MAX = 30.0
WINDOW = 2.0  # seconds of push starts that count a session as active (longer than max_gap)
QUIET = 0.25  # of the gap: a session waiting out its gap with no change for this long is pushed at once


class PushQueue:
    """The sessions to push, when each may go, and the workers that push them."""

    def __init__(
        self,
        push: Callable[[str], Awaitable[object]],
        *,
        gap: float,
        concurrency: int = 4,
        pushes_per_second: float = 20.0,
        max_gap: float = 1.0,
        failed: Callable[[str, BaseException, float], Awaitable[None]] | None = None,
        done: Callable[[str], Awaitable[None]] | None = None,
        first: Callable[[str], bool] | None = None,
    ):
        """`push(sid)` pushes one session; `failed(sid, exc, retry_in)` and `done(sid)` are told after
        each failed or finished push (syncstatus.py records errors and wakes who waits on progress);
        `first(sid)` says whether a session goes ahead of the others when several are due (shared ones)."""
        self._push = push
        self.gap = max(0.0, gap)
        self.pushes_per_second = pushes_per_second
        self.max_gap = max(self.gap, max_gap)
        self.concurrency = max(1, concurrency)
        self._failed = failed
        self._done = done
        self._first = first
        # (0 for a session that goes first, else 1; order of arrival; sid)
        self._queue: asyncio.PriorityQueue[tuple[int, int, str]] = asyncio.PriorityQueue()
        self._arrivals = itertools.count()
        self._queued: set[str] = set()  # in _queue: due now, waiting for a worker
        self._dirty: set[str] = set()  # changed since its last push started
        self._inflight: set[str] = set()
        self._not_before: dict[str, float] = {}  # loop time: the gap after a push started, or a retry
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._changed: dict[str, float] = {}  # loop time of the last change of a session not yet pushed
        self._quiet: dict[str, asyncio.TimerHandle] = {}  # sessions waiting out a gap: when to see if they are quiet
        self.retry_at: dict[str, float] = {}  # loop time of the next try of a session whose push failed
        # loop time until which the store asked (Retry-After) not to be sent a session's push again (its wish:
        # the retry may be later, our backoff being longer; `paced` says whether the next try is the store's)
        self.server_until: dict[str, float] = {}
        self._attempts: dict[str, int] = {}
        self._tasks: list[asyncio.Task] = []
        self.pushes = 0  # pushes started (tests and benchmarks read it)
        self._recent: collections.deque[tuple[float, str]] = collections.deque()  # (loop time, sid) of starts
        self._active: collections.Counter[str] = collections.Counter()  # sessions in _recent, with counts

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._work(), name=f"sessiond-push-{i}") for i in range(self.concurrency)
            ]

    async def stop(self) -> None:
        for h in [*self._timers.values(), *self._quiet.values()]:
            h.cancel()
        self._timers.clear()
        self._quiet.clear()
        await stop_tasks(self._tasks)
        self._tasks = []

    # ---------------------------------------------------------------- what the engine calls
    def notify(self, sid: str) -> None:
        """`sid` changed: push it now if it is quiet, else with what comes next."""
        self._dirty.add(sid)
        self._changed[sid] = asyncio.get_running_loop().time()
        if sid in self._timers:
            if sid not in self._quiet:
                self._arm_quiet(sid)
        else:
            self._schedule(sid)

    def now(self, sid: str) -> None:
        """Push `sid` as soon as a worker is free: no gap, no backoff; but not before the time the store
        asked for in a Retry-After (trying earlier only meets another refusal, and is what it asked not to get)."""
        until = self.server_until.get(sid)
        if until is not None and until > asyncio.get_running_loop().time():
            # it goes when that wait is over; our own backoff beyond it is skipped
            self._not_before[sid] = self.retry_at[sid] = until
            self._cancel_timers(sid)
            self.notify(sid)
            return
        self.server_until.pop(sid, None)
        self._not_before.pop(sid, None)
        self.retry_at.pop(sid, None)
        self._cancel_timers(sid)
        self.notify(sid)

    def paced(self, sid: str) -> bool:
        """Whether `sid`'s next try waits for the store's Retry-After, not only for our own backoff: the store
        asked for a wait that is not over, and it is the one that sets the next try."""
        until, at = self.server_until.get(sid), self.retry_at.get(sid)
        now = asyncio.get_running_loop().time()
        return until is not None and until > now and (at is None or at <= until + 0.001)

    def forget(self, sid: str) -> None:
        """A session was deleted: nothing more of it is pushed (a push in flight ends by itself)."""
        self._dirty.discard(sid)
        self._changed.pop(sid, None)
        self._not_before.pop(sid, None)
        self.retry_at.pop(sid, None)
        self.server_until.pop(sid, None)
        self._attempts.pop(sid, None)
        self._cancel_timers(sid)

    def current_gap(self, at: float | None = None) -> float:
        """The gap after a push that starts now: wider the more sessions are being pushed (see above)."""
        if at is not None:
            self._forget_before(at - WINDOW)
        if not self.gap or not self._active:
            return self.gap
        return min(self.max_gap, max(self.gap, len(self._active) / self.pushes_per_second))

    def stats(self) -> dict:
        """What `status` shows of the pushes: how many started, how many sessions are busy, the gap now."""
        try:
            at: float | None = asyncio.get_running_loop().time()
        except RuntimeError:
            at = None
        gap = self.current_gap(at)
        return {"started": self.pushes, "active_sessions": len(self._active), "gap": round(gap, 3)}

    def _forget_before(self, t: float) -> None:
        recent, active = self._recent, self._active
        while recent and recent[0][0] < t:
            sid = recent.popleft()[1]
            active[sid] -= 1
            if not active[sid]:
                del active[sid]

    def pending(self) -> set[str]:
        """Sessions waiting for a push (queued, waiting out the gap or a backoff, or changed in flight)."""
        return set(self._dirty)

    # ---------------------------------------------------------------- inside
    def _schedule(self, sid: str) -> None:
        if sid in self._inflight or sid in self._queued or sid in self._timers:
            return  # it goes when that push ends, when a worker is free, or when its timer fires
        loop = asyncio.get_running_loop()
        at = self._not_before.get(sid)
        if at is None or at <= loop.time():
            self._not_before.pop(sid, None)
            self._queued.add(sid)
            rank = 0 if self._first is not None and self._first(sid) else 1
            self._queue.put_nowait((rank, next(self._arrivals), sid))
        else:
            self._timers[sid] = loop.call_at(at, self._due, sid)
            self._arm_quiet(sid)

    def _due(self, sid: str) -> None:
        self._timers.pop(sid, None)
        quiet = self._quiet.pop(sid, None)
        if quiet is not None:
            quiet.cancel()
        if sid in self._dirty:
            self._schedule(sid)

    def _cancel_timers(self, sid: str) -> None:
        for timers in (self._timers, self._quiet):
            timer = timers.pop(sid, None)
            if timer is not None:
                timer.cancel()

    def _arm_quiet(self, sid: str) -> None:
        """Look at `sid` (waiting out its gap) again when it will have been quiet for QUIET of the gap."""
        if sid in self.retry_at:
            return  # a backoff is waited out in full: the store is failing
        loop = asyncio.get_running_loop()
        at = self._changed.get(sid, loop.time()) + QUIET * self.current_gap()
        due = self._timers[sid].when()
        if at < due:
            self._quiet[sid] = loop.call_at(at, self._quiet_check, sid)

    def _quiet_check(self, sid: str) -> None:
        self._quiet.pop(sid, None)
        if sid not in self._timers or sid not in self._dirty:
            return
        loop = asyncio.get_running_loop()
        if loop.time() - self._changed.get(sid, 0.0) >= QUIET * self.current_gap() - 0.001:
            self._timers.pop(sid).cancel()  # quiet: its last change goes now, not at the end of the gap
            self._not_before.pop(sid, None)
            self._schedule(sid)
        else:  # changed meanwhile: look again when that change has been quiet as long
            self._arm_quiet(sid)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sid = (await self._queue.get())[2]
            self._queued.discard(sid)
            if sid not in self._dirty:
                continue  # forgotten meanwhile
            self._dirty.discard(sid)
            self._changed.pop(sid, None)
            self._inflight.add(sid)
            started = loop.time()
            self.pushes += 1
            self._recent.append((started, sid))
            self._active[sid] += 1
            try:
                await self._push(sid)
            except asyncio.CancelledError:
                self._dirty.add(sid)
                raise
            except Exception as exc:  # the store failed or lied: keep the work queued and back off
                self._dirty.add(sid)
                n = self._attempts.get(sid, 0) + 1
                self._attempts[sid] = n
                delay = min(RETRY_MAX, RETRY_FIRST * (2 ** (n - 1)))
                asked = server_wait(exc)
                if asked is not None:  # the store said when (Retry-After): not before then
                    delay = max(delay, asked)
                    # the store's own wish, not our backoff past it (a `Retry-After: 0` asks for no wait)
                    self.server_until[sid] = loop.time() + asked
                else:
                    self.server_until.pop(sid, None)
                self.retry_at[sid] = self._not_before[sid] = loop.time() + delay
                await self._tell(self._failed, sid, exc, delay)
            else:
                self._attempts.pop(sid, None)
                self.retry_at.pop(sid, None)
                self.server_until.pop(sid, None)
                if self.gap:
                    gap = self.current_gap(started)
                    self._not_before[sid] = max(self._not_before.get(sid, 0.0), started + gap)
                await self._tell(self._done, sid)
            finally:
                self._inflight.discard(sid)
            if sid in self._dirty:
                self._schedule(sid)
            elif len(self._not_before) > 1024 and self.pushes % 1024 == 0:
                t = loop.time()  # forget the gaps that are over, so that the map stays small
                self._not_before = {s: at for s, at in self._not_before.items() if at > t}

    @staticmethod
    async def _tell(fn: Callable[..., Awaitable[None]] | None, *args: object) -> None:
        if fn is None:
            return
        try:
            await fn(*args)
        except asyncio.CancelledError:
            raise
        except Exception:  # a report that failed must not stop a worker
            log.exception("push bookkeeping failed")
