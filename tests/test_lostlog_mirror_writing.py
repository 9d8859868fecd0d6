"""A sync's repair check (sync/lostlog.py store_lacks_log) of a mirror whose store has a write under way.

Device A syncs through a mirror of two folder stores; the second lost this device's log of a session (its head file
gone: a host restored from a backup). The check asked only the stores caught up, and one with a write sent straight
to it and not answered yet (another session's push) is not: it was skipped, and the check said the stores held the
log whole. Nothing was pushed again to the second store, and doctor's warning of a head a repair published again
(`head_mends`) was cleared without that store looked at. Now the check waits for the write to end (at most the
sync's timeout) and then asks the store; a store still not caught up is unchecked, as one that does not answer: no
loss found, and the warning kept for the next sync. The wait is before the session's push lock (Pusher.repair): it
held a push or `rm` of the session up to the sync's timeout."""

from __future__ import annotations

import asyncio
import os

from conftest import eventually
from sessiond.storage.database import Database
from sessiond.stores import FileStore
from sessiond.sync.engine import Syncer
from sessiond.sync.lostlog import store_lacks_log
from sessiond.sync.mirror import MirrorStore


async def _mirrored(tmp_path, timeout: float):
    """A on a mirror of two folder stores, a session pushed to both, then its head lost on the second; a write to
    the second store held under way until `ended` is set. (db, a, mirror, sid, second, ended, writing)"""
    db = await Database.open(str(tmp_path / "a.sqlite"))
    first, second = FileStore(str(tmp_path / "first")), FileStore(str(tmp_path / "second"))
    mirror = MirrorStore([first, second], db.outbox, timeout=30, lag=60.0)  # (the held write not failed to its outbox)
    # (set up with a store timeout any load allows: a share's push given 0.3 s on a loaded machine timed out, the test
    # failing before it began; the timeout the test is about is set once the session is in both stores)
    a = Syncer(db, mirror, str(tmp_path / "keys"), timeout=max(timeout, 30.0), interval=3600.0, poll_interval=3600.0)
    await mirror.started()
    await a.start()
    sid = (await db.create_session({"name": "lost on one"}))["id"]
    await db.append_messages(sid, [{"role": "user", "content": "a1"}])
    await a.share(sid, write=True, passphrase=None, expires_in=None)
    await a.pusher.push(sid)
    assert (await db.sync_state(sid))["head_rev"]
    os.remove(os.path.join(str(tmp_path / "second"), "heads", a.ctx.keys.head_pk(sid).hex()))  # (lost there)
    assert await second.get_head(a.ctx.keys.head_pk(sid)) is None
    a.ctx.timeout = timeout  # (each push and check reads it as it begins)

    ended = asyncio.Event()
    real_put_many = second.put_many

    async def held(*args, **kw):  # (the write to the second store answers only once the test lets it)
        await ended.wait()
        return await real_put_many(*args, **kw)

    second.put_many = held  # type: ignore[method-assign]
    writing = asyncio.ensure_future(mirror.put(b"another session's object"))
    await eventually(lambda: mirror.health[second.url].writing == 1, timeout=10, what="the write under way")
    assert second not in mirror.caught_up()
    return db, a, mirror, sid, second, first, ended, writing


async def mended(a, sid: str, url: str) -> dict:
    """A repair of `sid`'s head on the store `url` noted, as a sync's repair notes it (doctor's warning): the mend."""
    mend = {"store": url, "how": "rolled back", "published": 3, "served": 1, "again": False}
    a.ctx.head_mends[sid] = mend
    await a.ctx.db.syncstate.head_mends.note(sid, mend)
    return mend


class _Watched(asyncio.Event):
    """A store's `Health.idle` that tells when the check begins to wait on it (`waited`)."""

    def __init__(self) -> None:
        super().__init__()
        self.waited = asyncio.Event()

    async def wait(self):  # type: ignore[override]
        self.waited.set()
        return await super().wait()


def _watch(mirror, second) -> _Watched:
    health = mirror.health[second.url]
    assert not health.idle.is_set()
    health.idle = watched = _Watched()  # (cleared, as the write is under way)
    return watched


async def test_a_store_with_a_write_under_way_is_checked_once_the_write_ends(tmp_path):
    db, a, mirror, sid, second, first, ended, writing = await _mirrored(tmp_path, timeout=10)
    watched = _watch(mirror, second)
    try:
        repair = asyncio.ensure_future(a.pusher.repair(sid))
        await asyncio.wait_for(watched.waited.wait(), 10)
        ended.set()  # (the write ends while the repair waits for it)
        # before: False (the second store skipped as not caught up): the log lost there never pushed again
        assert await asyncio.wait_for(repair, 10)
        await asyncio.wait_for(writing, 10)
        await a.pusher.push(sid)  # (what the sync queues after the repair)
        assert await second.get_head(a.ctx.keys.head_pk(sid)) is not None  # (pushed there again)
    finally:
        ended.set()
        await a.stop()
        await db.close()


async def test_the_sessions_push_is_not_held_while_the_check_waits_for_a_write(tmp_path):
    """The wait is before the session's push lock is taken: a push (or `rm`, which takes the same lock) of the
    session meanwhile answers at once, not once the write ends or the sync's timeout has passed."""
    db, a, mirror, sid, second, first, ended, writing = await _mirrored(tmp_path, timeout=10)
    watched = _watch(mirror, second)
    try:
        repair = asyncio.ensure_future(a.pusher.repair(sid))
        await asyncio.wait_for(watched.waited.wait(), 10)
        # main: the check waited holding the lock: the push waited for the write to end (up to 10 s)
        await asyncio.wait_for(a.pusher.push(sid), 2)
        async with asyncio.timeout(2):
            async with a.ctx.lock(sid):  # (what `rm` takes: daemon/operations.py delete)
                pass
        assert not repair.done()  # (still waiting for the write)
        ended.set()
        assert await asyncio.wait_for(repair, 10)  # (then checked under the lock: the log lost there found)
        await asyncio.wait_for(writing, 10)
    finally:
        ended.set()
        await a.stop()
        await db.close()


async def test_a_store_whose_write_does_not_end_keeps_the_warning(tmp_path):
    db, a, mirror, sid, second, first, ended, writing = await _mirrored(tmp_path, timeout=0.5)
    mend = await mended(a, sid, second.url)
    try:
        assert await store_lacks_log(a.ctx, sid) is None  # (the second store unchecked: no loss known)
        # main: cleared, the second store never asked
        kept = a.ctx.head_mends.get(sid)
        assert kept is not None and kept["deferred"]["store"] == second.url, kept  # (said deferred: doctor)
        assert {k: v for k, v in kept.items() if k != "deferred"} == mend
        assert (await db.syncstate.head_mends.all()).get(sid) == kept
        ended.set()
        await asyncio.wait_for(writing, 10)
        assert await store_lacks_log(a.ctx, sid) is not None  # (once caught up: asked, the log found lost there)
    finally:
        ended.set()
        await a.stop()
        await db.close()
