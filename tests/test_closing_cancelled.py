"""A delete, an end or a revocation whose task is cancelled (the daemon stopping, the clean-up loop or a
pull cancelled) while it waits for its commit. Its rows are in the batch and commit a moment later, but the
mark a question waits on (storage/closing.py) was let go as the cancellation went through it, before that
commit: a question meanwhile read the session as still present, active and writable, and asked its model
(the user's tokens spent, its answer then refused a place). The mark now stays until the batch's commit has
ended. On a real database, its commit held at the real pause points (SESSIOND_TEST_PAUSE)."""

from __future__ import annotations

import asyncio
import os

import pytest

from sessiond.storage.errors import NotFound
from waiting import eventually


async def _state(db, sid: str) -> tuple[str, str] | None:
    """The session as a question reads it (committed state): (status, access), None if gone."""
    try:
        s = await db.get_session(sid)
    except NotFound:
        return None
    return s["status"], s["access"]


@pytest.mark.parametrize("how", ["delete", "end", "revoke"])
async def test_a_close_cancelled_while_its_commit_waits_keeps_questions_waiting_until_it_lands(
    db, tmp_path, monkeypatch, how
):
    sid = (await db.create_session({"name": "s"}))["id"]
    flag = str(tmp_path / "held")
    monkeypatch.setenv("SESSIOND_TEST_PAUSE", f"commit.{how}:{flag}")

    async def close() -> None:  # as the daemon's Operations.delete_session, ._end and the pull's revocation do
        if how == "revoke":
            await db.mark_revoked(sid)
            return
        with db.closing.marked(sid):
            if how == "delete":
                await db.delete_session(sid)
            else:
                await db.set_status(sid, "ended")

    closing = asyncio.create_task(close())
    await eventually(lambda: os.path.exists(flag), timeout=10, what="the commit held")
    closing.cancel()  # while it waits for its commit
    with pytest.raises(asyncio.CancelledError):
        await closing

    async def question() -> tuple[str, str] | None:  # as complete.py's prepare: the outcome first, then the read
        await db.closing.settled(sid)
        return await _state(db, sid)

    asking = asyncio.create_task(question())
    os.remove(flag)  # the commit goes on
    seen = await asyncio.wait_for(asking, timeout=10)
    want = {"delete": None, "end": ("ended", "owner"), "revoke": ("active", "revoked")}[how]
    assert seen == want, f"the question read the session before the {how} it waited for had landed"
    assert await _state(db, sid) == want
    await asyncio.wait_for(db.closing.settled(sid), timeout=5)  # no mark left behind


async def test_a_question_waits_for_a_rekey_notice_s_check_at_most_check_wait_then_goes_on(monkeypatch):
    """A check of a rekey notice that leaves this device out (its reads of a store, then the revocation:
    sync/rekey.py confirm) is marked, but a question waits for checks alone CHECK_WAIT seconds at most: the
    check may be a forgery's, refused, and a store's timeouts are minutes. A revocation begun within the
    check is waited for to its end, as any close is."""
    from sessiond.storage import closing as closing_module

    monkeypatch.setattr(closing_module, "CHECK_WAIT", 1.0)
    closing = closing_module.Closing()
    loop = asyncio.get_running_loop()
    with closing.marked("s", check=True):  # a check that takes too long: the question goes on
        started = loop.time()
        await asyncio.wait_for(closing.settled("s"), timeout=5)
        assert 0.95 <= loop.time() - started < 5
    await asyncio.wait_for(closing.settled("s"), timeout=1)  # nothing left marked

    checked = asyncio.Event()

    async def check_then_revoke() -> None:  # (as confirm: the check, then the revocation within it)
        with closing.marked("s", check=True):
            await checked.wait()
            with closing.marked("s"):
                await asyncio.sleep(1.5)  # the revocation's commit, past CHECK_WAIT (a test's stand-in)

    task = asyncio.create_task(check_then_revoke())
    await asyncio.sleep(0)
    asking = asyncio.create_task(closing.settled("s"))
    await asyncio.sleep(0.05)
    # the check ends well within CHECK_WAIT (a stall of most of a second would be needed to miss it); the
    # revocation it begins outlasts it
    checked.set()
    await asyncio.wait_for(asking, timeout=5)
    assert task.done(), "the question went on before the revocation under way ended"
    await task
