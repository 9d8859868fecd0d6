"""A mirror whose store has a write under way at every sync's repair check (another session pushing all the time):
the check leaves that store unchecked, as one that does not answer, and doctor's warning of a head published again
is kept (sync/lostlog.py). Doctor said that warning as it was, with `verify` as the way: nothing told that the store
was never checked since, nor why, and the warning stayed, sync after sync, even with the store holding the log whole.
Now a busy store is asked too: one holding the log whole is, whatever is under way, and the warning goes; one lacking
some of it may have it on the way, and stays unchecked, a state of its own: the mend as the engine gives it names
the store, why its check was deferred and how many times, and doctor says so, without waiting itself."""

from __future__ import annotations

import asyncio

from sessiond.daemon import doctor
from sessiond.sync.engine import Syncer
from test_lostlog_mirror_writing import _mirrored, mended


async def test_a_repair_check_deferred_at_every_sync_is_said_as_such(tmp_path):
    db, a, mirror, sid, second, first, ended, writing = await _mirrored(tmp_path, timeout=0.3)
    await mended(a, sid, second.url)
    try:
        for _ in range(3):  # (a sync's repair each time: the second store's write under way throughout)
            assert not await a.pusher.repair(sid)
        got = a.head_mends()[sid]
        # main: no such state: the warning as when the head was published again
        deferred = got["deferred"]
        assert (deferred["store"], deferred["checks"]) == (second.url, 3), got
        assert "write" in deferred["why"] and "under way" in deferred["why"], got
        said = doctor.mend_finding(sid, got)
        assert said["level"] == "warn" and "not checked" in said["message"], said
        assert "under way" in said["message"] and "3" in said["message"], said
        ended.set()
        await asyncio.wait_for(writing, 10)
        await a.pusher.repair(sid)  # (checked now: the log lost there found, pushed again; no longer deferred)
        assert "deferred" not in a.head_mends().get(sid, {}), a.head_mends()
    finally:
        ended.set()
        await a.stop()
        await db.close()


async def test_a_busy_store_holding_the_log_whole_ends_the_warning(tmp_path):
    """The second store holds the log again (pushed there by the repair); its writes are under way at every check."""
    db, a, mirror, sid, second, first, ended, writing = await _mirrored(tmp_path, timeout=0.3)
    try:
        await a.pusher.repair(sid)  # (its head lost there, the store busy: unchecked, nothing pushed there)
        head = await first.get_head(a.ctx.keys.head_pk(sid))
        await second.set_head(head)  # (the head put back there, as a push of it would: the log whole there again)
        await mended(a, sid, second.url)
        assert not await a.pusher.repair(sid)
        # main: kept (the second store never asked while a write to it is under way)
        assert sid not in a.head_mends(), a.head_mends()
        assert not writing.done()  # (the write under way throughout)
    finally:
        ended.set()
        await a.stop()
        await db.close()


async def test_a_deferred_repair_check_is_said_so_after_a_restart(tmp_path):
    """The deferred state is kept with the mend (storage/headlies.py HeadMends, in `meta`): a daemon started again
    says the check was deferred, and counts the next deferred check on from there, not the plain warning."""
    db, a, mirror, sid, second, first, ended, writing = await _mirrored(tmp_path, timeout=0.3)
    await mended(a, sid, second.url)
    try:
        for _ in range(2):
            assert not await a.pusher.repair(sid)
        before = a.head_mends()[sid]["deferred"]
        await a.stop()
        again = Syncer(db, mirror, str(tmp_path / "keys"), timeout=0.3, interval=3600.0, poll_interval=3600.0)
        await again.start()
        try:
            got = again.head_mends()[sid]
            # main: no "deferred" after the restart (kept in memory only): the plain warning until a sync
            assert got.get("deferred") == before, got
            assert "not checked" in doctor.mend_finding(sid, got)["message"]
            assert not await again.pusher.repair(sid)  # (deferred once more: counted on)
            assert again.head_mends()[sid]["deferred"]["checks"] == 3, again.head_mends()
            ended.set()
            await asyncio.wait_for(writing, 10)
            await again.pusher.repair(sid)  # (checked now: the loss found, pushed again; no longer deferred)
            assert "deferred" not in again.head_mends().get(sid, {}), again.head_mends()
            await again.stop()
            third = Syncer(db, mirror, str(tmp_path / "keys"), timeout=0.3, interval=3600.0, poll_interval=3600.0)
            await third.start()
            try:
                assert "deferred" not in third.head_mends().get(sid, {}), third.head_mends()
            finally:
                await third.stop()
        finally:
            await again.stop()
    finally:
        ended.set()
        await a.stop()
        await db.close()
