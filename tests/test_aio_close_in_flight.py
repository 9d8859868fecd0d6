"""AsyncClient closed (an app shutting down, `async with` left) while appends of its other tasks are still on
their stream: each of those either was answered or raises a ClientError that says it may or may not have been
done and names its key (sent again with it, it is stored once); none goes on to open a stream of a client
already closed (aiohttp's raw RuntimeError "Session is closed" or AssertionError, and an aiohttp session
left open that nothing closes)."""

from __future__ import annotations

import asyncio
from collections import Counter

from sessiond.client import Client, ClientError
from waiting import eventually


async def test_async_appends_in_flight_when_the_client_closes_end_clearly_and_leave_nothing_open(daemon):
    sid = Client(daemon.home).create_session(name="s")["id"]
    ac = daemon.aclient()
    await ac.append(sid, "user", "first")  # a POST: the next ones go on a stream
    tasks = [asyncio.create_task(ac.append(sid, "user", f"a{i}")) for i in range(20)]
    await eventually(lambda: any(p.waiting for p in ac._streams), interval=0, what="appends on the stream")
    await ac.close()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failed = {f"a{i}": r for i, r in enumerate(results) if isinstance(r, BaseException)}
    assert failed, "the close came after every answer: nothing tested"
    for r in failed.values():
        assert isinstance(r, ClientError) and r.done_unknown and r.idempotency_key, repr(r)
        assert "closed" in str(r), str(r)
    assert ac._session is None and ac._ws_session is None and not ac._streams  # nothing left open
    with Client(daemon.home) as c:
        for content, r in failed.items():  # sent again with their keys: each stored once
            c.append(sid, "user", content, idempotency_key=r.idempotency_key)
        stored = Counter(m["content"] for m in c.messages(sid, limit=100)["messages"])
    assert stored == Counter(["first", *(f"a{i}" for i in range(20))])
