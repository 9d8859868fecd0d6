"""daemon/operations.py's `Operations` is an object the daemon owns, not a mixin: it is given exactly what
it uses (a database, a sync engine, two settings) and owns its background tasks, the clean-up loop and
the automatic checkpoints, which `cancel()` ends when the daemon stops. Tested in-process with stand-ins;
the routes over a real daemon are test_manage's, test_share's and test_api's."""

import asyncio

from sessiond.daemon.operations import Operations
from waiting import eventually


class _Db:
    def __init__(self) -> None:
        self.expiry_runs = 0

    async def expired(self, now: float) -> list[dict]:
        self.expiry_runs += 1
        return []


class _Syncer:
    def __init__(self) -> None:
        self.checkpoints: list[str] = []
        self.hold = asyncio.Event()

    async def make_checkpoint(self, sid: str) -> dict:
        self.checkpoints.append(sid)
        await self.hold.wait()  # a checkpoint under way when the daemon stops
        return {}


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
