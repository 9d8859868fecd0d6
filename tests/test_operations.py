"""daemon/operations.py's `Operations` is an object the daemon owns, not a mixin: it is given exactly what
it uses (a database, a sync engine, two settings) and owns its background tasks, the clean-up loop and
the automatic checkpoints, which `cancel()` ends when the daemon stops. Tested in-process with stand-ins;
the routes over a real daemon are test_manage's, test_share's and test_api's."""

import asyncio
import time

from sessiond.daemon.operations import Operations
from sessiond.storage.closing import Closing
from waiting import eventually


class _Db:
    def __init__(self) -> None:
        self.expiry_runs = 0
        self.run_at: list[float] = []  # wall-clock time of each expiry run
        self.next: float | None = None  # what next_expiry answers
        self.of: dict[str, float] = {}  # what expiry_of answers
        self.closing = Closing()  # the sessions being closed, as the Database keeps them

    async def expired(self, now: float, **_) -> list[dict]:
        self.expiry_runs += 1
        self.run_at.append(now)
        return []

    async def activity_after(self, t: float) -> int:
        return 0  # (no activity stamped past the run's time: the wall clock was not stepped back)

    async def next_expiry(self, after: float, **_) -> float | None:
        return self.next if self.next is not None and self.next > after else None

    async def expiry_of(self, sid: str, **_) -> float | None:
        return self.of.get(sid)


class _Syncer:
    def __init__(self) -> None:
        self.checkpoints: list[str] = []
        self.hold = asyncio.Event()

    async def make_checkpoint(self, sid: str) -> dict:
        self.checkpoints.append(sid)
        await self.hold.wait()  # a checkpoint under way when the daemon stops
        return {}

    async def checkpoint_marks(self, sid: str) -> list[dict]:
        return [await self.make_checkpoint(sid)]  # (an append's marks: as one here)


async def test_operations_own_their_tasks_and_cancel_them():
    db, syncer = _Db(), _Syncer()
    ops = Operations(db, syncer, cleanup_interval=0.01, delete_expired=False)  # type: ignore[arg-type]
    ops.start()
    await eventually(lambda: db.expiry_runs >= 2, what="the clean-up loop runs expiry")
    ops.schedule_checkpoint("s1")
    ops.schedule_checkpoint("s2")
    await eventually(lambda: syncer.checkpoints == ["s1"], what="one automatic checkpoint at a time")
    tasks = list(ops._tasks)
    assert len(tasks) == 3  # the loop and the two checkpoints
    ops.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert all(t.cancelled() for t in tasks) and not ops._tasks


async def test_no_cleanup_loop_when_it_is_off():
    ops = Operations(_Db(), _Syncer(), cleanup_interval=0, delete_expired=False)  # type: ignore[arg-type]
    ops.start()
    assert not ops._tasks


async def test_the_cleanup_runs_at_the_next_expiry_not_a_whole_interval_later():
    db = _Db()
    db.next = time.time() + 0.3
    ops = Operations(db, _Syncer(), cleanup_interval=3600, delete_expired=False)  # type: ignore[arg-type]
    ops.start()
    try:
        await eventually(lambda: db.expiry_runs >= 1, timeout=10, what="the run at the next expiry")
        assert db.run_at[0] >= db.next  # not before it
    finally:
        ops.cancel()


async def test_a_session_changed_to_expire_sooner_wakes_the_cleanup():
    db = _Db()
    ops = Operations(db, _Syncer(), cleanup_interval=3600, delete_expired=False)  # type: ignore[arg-type]
    ops.start()
    try:
        await asyncio.sleep(0)  # the loop asks next_expiry (None: nothing can expire) and sleeps
        ops.session_changed({"type": "messages.appended", "session": "s1"})  # not a change of expiry
        db.of["s1"] = time.time() + 0.2
        ops.session_changed({"type": "session.updated", "session": "s1"})  # say, a new expires_at
        await eventually(lambda: db.expiry_runs >= 1, timeout=10, what="the run at the changed session's expiry")
        assert db.run_at[0] >= db.of["s1"]
    finally:
        ops.cancel()


async def test_a_session_the_cleanup_cannot_end_does_not_make_it_run_again_and_again():
    # a read-only import past its expiry is not ended here (its owner's devices end it): its expiry, past,
    # must not be waited on (the loop would run at once, and again), neither found by the loop nor by a change
    db = _Db()
    db.next = time.time() - 5
    db.of["ro"] = db.next
    ops = Operations(db, _Syncer(), cleanup_interval=3600, delete_expired=False)  # type: ignore[arg-type]
    await ops.expire_due()  # as the daemon's start does
    ops.start()
    try:
        for _ in range(20):
            ops.session_changed({"type": "session.synced", "session": "ro"})
            await asyncio.sleep(0.01)
        assert db.expiry_runs <= 2, db.expiry_runs
    finally:
        ops.cancel()


async def test_the_cleanup_runs_a_second_apart_at_most_however_many_sessions_expire():
    # each run reads every session that can expire: sessions expiring one after another, a few ms apart,
    # end together, a run a second at most, not a run each
    class Busy(_Db):
        async def next_expiry(self, after: float, **_) -> float | None:
            return max(after, time.time()) + 0.005  # always another one just ahead

    db = Busy()
    ops = Operations(db, _Syncer(), cleanup_interval=3600, delete_expired=False)  # type: ignore[arg-type]
    ops.start()
    try:
        await eventually(lambda: db.expiry_runs >= 3, timeout=10, what="three runs")
        gaps = [b - a for a, b in zip(db.run_at, db.run_at[1:], strict=False)]
        assert all(g >= 0.99 for g in gaps), gaps
    finally:
        ops.cancel()
