"""Stopping AsyncClient's streamed answer early: `await stream.aclose()` (or `contextlib.aclosing`) closes its
connection, and the daemon records what arrived, marked interrupted. Breaking out of the `async for` alone
does not close an async generator the app still holds (Python closes it only once it is dropped): the model
would go on, its whole answer recorded and paid for; the docstring and README said breaking out was enough."""

from __future__ import annotations

import contextlib

import pytest

from waiting import eventually


async def _answer(ac, sid: str) -> dict:
    async def recorded():
        return next((m for m in (await ac.messages(sid))["messages"] if m["role"] == "assistant"), None)

    return await eventually(recorded, timeout=20, what="the answer recorded")


@pytest.mark.parametrize("how", ["aclose", "aclosing"])
async def test_async_a_stream_held_and_closed_early_is_recorded_interrupted(slow_stream, how):
    sid = slow_stream.client().create_session(model="echo-1")["id"]
    async with slow_stream.aclient() as ac:
        if how == "aclose":
            stream = ac.complete_stream(sid, "a b c d e f g h i j")
            async for _ in stream:
                break
            await stream.aclose()
        else:
            async with contextlib.aclosing(ac.complete_stream(sid, "a b c d e f g h i j")) as stream:
                async for _ in stream:
                    break
        answer = await _answer(ac, sid)
    assert answer["interrupted"] is True and answer["content"] != "echo: a b c d e f g h i j"
