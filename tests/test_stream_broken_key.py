"""A streamed answer whose connection broke midway (the daemon killed, say): the app's error names the
question's Idempotency-Key (`.idempotency_key`, the client's own when the app gave none) and says its outcome
is not known (`.done_unknown`): `asked(sid, key)` tells what was recorded, and the question sent again with that
key is stored once, as the README says of a stream closed early, given its key."""

from __future__ import annotations

import pytest

from sessiond.client import ClientError


def _asked_and_again(d, sid: str, exc: ClientError) -> None:
    assert exc.done_unknown and exc.idempotency_key, repr(exc)
    d.start()
    with d.client() as c:
        asked = c.asked(sid, exc.idempotency_key)
        assert asked["question"]["content"] == "a b c d e f g h"
        c.complete(sid, "a b c d e f g h", idempotency_key=exc.idempotency_key)
        questions = [m for m in c.messages(sid)["messages"] if m["role"] == "user"]
    assert [m["id"] for m in questions] == [asked["question"]["id"]]  # stored once


def test_a_stream_broken_midway_names_its_key(slow_stream):
    d = slow_stream
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    got: list[str] = []
    with pytest.raises(ClientError) as info:
        for text in c.complete_stream(sid, "a b c d e f g h"):
            got.append(text)
            if len(got) == 2:
                d.kill()
    c.close()
    _asked_and_again(d, sid, info.value)


async def test_async_a_stream_broken_midway_names_its_key(slow_stream):
    d = slow_stream
    sid = d.client().create_session(model="echo-1")["id"]
    got: list = []
    async with d.aclient() as ac:
        with pytest.raises(ClientError) as info:
            async for text in ac.complete_stream(sid, "a b c d e f g h"):
                got.append(text)
                if len(got) == 2:
                    d.kill()
    _asked_and_again(d, sid, info.value)
