"""A follower's poll round pulled each session that moved, and the pull of a session being rekeyed here waited
for the whole rekey (its store calls) at the session's rekey lock (a rekey's record found: resume; or the apply
under the lock, generation.py's Generations.same): the round did not end meanwhile, so no other session was pulled again
until the rekey ended. Shown in process with the rekey of X held at a pause point (rekey.published: its notice
out, its record kept, the lock held) while A writes to Y: B's polls bring Y's message within the usual time; X is
pulled by the first poll after the rekey."""

from __future__ import annotations

import asyncio
import os
import time

from devices import watch_pulls


async def _until(what, seconds: float, why: str) -> None:
    deadline = time.monotonic() + seconds
    while not await what():
        assert time.monotonic() < deadline, why
        await asyncio.sleep(0.02)


async def test_a_rekey_held_here_does_not_hold_the_pulls_of_other_sessions(devices, tmp_path, monkeypatch):
    a, b = await devices.open()
    await a.start()
    await b.start()
    x = await devices.shared("X", write=True)
    y = await devices.shared("Y", write=True)
    flag = str(tmp_path / "rekey-held")
    monkeypatch.setenv("SESSIOND_TEST_PAUSE", f"rekey.published:{flag}")
    started, _finished = watch_pulls(b)
    rekeyed = asyncio.create_task(b.rekey(x))
    try:
        await _until(lambda: asyncio.sleep(0, os.path.exists(flag)), 20, "the rekey never reached its pause point")
        started.clear()
        # a poll pulls X (its members slot moved: the notice): it reaches X's rekey lock, held by the rekey
        await _until(lambda: asyncio.sleep(0, x in started), 10, "no poll pulled X")
        await devices.dba.append_messages(y, [{"role": "user", "content": "Y while X is rekeyed"}])
        await a.push(y)

        async def arrived() -> bool:
            return "Y while X is rekeyed" in [m["content"] for m in await devices.dbb.list_messages(y)]

        await _until(arrived, 10, "main: Y's pull waited for X's rekey (the poll round held at X's rekey lock)")
        assert not rekeyed.done()
    finally:
        if os.path.exists(flag):
            os.remove(flag)
    await asyncio.wait_for(rekeyed, 30)
    await devices.dbb.append_messages(x, [{"role": "user", "content": "X after the rekey"}])
    assert (await b.sync_now(x, wait=True, timeout=20))["complete"]
    assert (await a.sync_now(x, wait=True, timeout=20))["complete"]
    assert "X after the rekey" in [m["content"] for m in await devices.dba.list_messages(x)]
