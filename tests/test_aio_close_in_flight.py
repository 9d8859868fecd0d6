"""AsyncClient closed (an app shutting down, `async with` left) while appends of its other tasks are still on
their stream: each of those either was answered or raises a ClientError that says it may or may not have been
done and names its key (sent again with it, it is stored once); none goes on to open a stream of a client
already closed (aiohttp's raw RuntimeError "Session is closed" or AssertionError, and an aiohttp session
left open that nothing closes)."""

from __future__ import annotations

import asyncio
import os
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


def _awaiting(task: asyncio.Task, name: str) -> bool:
    """Whether `task` awaits, somewhere down its chain of coroutines, one named `name`."""
    aw = task.get_coro()
    while aw is not None:
        if getattr(getattr(aw, "cr_code", None), "co_name", None) == name:
            return True
        aw = getattr(aw, "cr_await", None)
    return False


async def _failed_once_closed(ac, call: asyncio.Future) -> ClientError:
    """The error of `call` (of client `ac`, waiting for its answer) once `ac` is closed."""
    await ac.close()
    try:
        await asyncio.wait_for(call, 10)
    except ClientError as exc:
        return exc
    raise AssertionError("the call was answered though its client was closed under it")


async def test_an_async_post_append_in_flight_when_the_client_closes_names_its_key(make_daemon, tmp_path):
    """The client's first append (a POST; every one without an append stream) waiting for its answer when the
    app closed the client: aiohttp's connection closed under it, the client sent it again on the session being
    closed, and the app got aiohttp's raw RuntimeError "Session is closed", no ClientError, no key, though the
    daemon had the append. It raises ClientError now, done_unknown and naming its key, as the stream's appends
    do; sent again with it, the append is stored once."""
    flag = str(tmp_path / "commit.end")
    d = make_daemon(env={"SESSIOND_TEST_PAUSE": f"commit.end:{flag}"}).start()
    c = d.client()
    sid = c.create_session(name="s")["id"]
    other = c.create_session(name="ended")["id"]
    ending = asyncio.ensure_future(asyncio.to_thread(lambda: d.client().end(other)))  # its commit held...
    try:
        await eventually(lambda: os.path.exists(flag), timeout=20, what="the end's commit held")
        ac = d.aclient()
        appending = asyncio.create_task(ac.append(sid, "user", "held", idempotency_key="held-1"))  # ...and this
        await eventually(lambda: _awaiting(appending, "start"), interval=0, what="the append waiting for its answer")
        err = await _failed_once_closed(ac, appending)
    finally:
        if os.path.exists(flag):
            os.remove(flag)
        await ending
    assert err.done_unknown and err.idempotency_key == "held-1", str(err)
    assert f"close() was called during POST /v1/sessions/{sid}/messages" in str(err), str(err)
    assert ac._session is None
    async with d.aclient() as again:
        m = await again.append(sid, "user", "held", idempotency_key="held-1")
    assert [(x["id"], x["content"]) for x in c.messages(sid)["messages"]] == [(m["id"], "held")]


async def test_an_async_streamed_question_in_flight_when_the_client_closes_names_its_key(make_daemon, tmp_path):
    """complete_stream()'s question waiting for its answer's head when the app closed the client: it was sent
    again, on a new aiohttp session that close() had already let go (left open, the question asked as the
    client was closed). It raises ClientError now, naming its key, as an append does."""
    flag = str(tmp_path / "complete.start")
    d = make_daemon(env={"SESSIOND_TEST_PAUSE": f"complete.start:{flag}"}).start()
    sid = d.client().create_session(name="s")["id"]
    ac = d.aclient()
    asking = asyncio.ensure_future(ac.complete_stream(sid, "hi", idempotency_key="asked-1"))  # sent when awaited
    try:
        await eventually(lambda: os.path.exists(flag), timeout=20, what="the question held")
        err = await _failed_once_closed(ac, asking)  # (sent again, it would wait at the pause point too)
    finally:
        if os.path.exists(flag):
            os.remove(flag)
    assert err.done_unknown and err.idempotency_key == "asked-1", str(err)
    assert f"close() was called during POST /v1/sessions/{sid}/complete" in str(err), str(err)
    assert ac._session is None  # nothing opened after close()
