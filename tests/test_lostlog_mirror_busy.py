"""A mirror whose store has a write under way at every sync's repair check (another session pushing all the time):
the check leaves that store unchecked, as one that does not answer, and doctor's warning of a head published again
is kept (sync/lostlog.py). Doctor said that warning as it was, with `verify` as the way: nothing told that the store
was never checked since, nor why, and the warning stayed, sync after sync. The check deferred is now its own state:
the mend as the engine gives it names the store, why its check was deferred and how many times, and doctor says
so, without waiting itself."""

from __future__ import annotations

import asyncio

from sessiond.daemon import doctor
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
