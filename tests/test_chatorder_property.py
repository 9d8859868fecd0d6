"""storage/chatorder.py reads a session's messages across its chats as a merge of one index range per chat, in
place of one sorted query (ORDER BY lamport, device_id, seq). Hypothesis writes two or three devices' logs
(tests/test_converge.py's histories: messages in chats made on any device, remote ones arriving before their
chat's creation, ties of Lamport clocks across devices), applies them as pulls do, beside another session of
this device's that is then deleted, and the merged reads must give exactly the plain sort's order: every page
across the chats, forwards (after the last id) and backwards (before the first), of any size, neither skips
nor repeats a message, `last` and `conversation()` the same, and a fork copies what the sort gives up to its
message. The same over the fallback of a session of more chats than a compound SELECT takes (MAX_MERGED)."""

from __future__ import annotations

import asyncio
import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freshdb import SHM, fresh_copy
from sessiond.storage import chatorder
from sessiond.storage.database import Database
from test_converge import SID, _remote, histories

_SETTINGS = settings(
    max_examples=int(os.environ.get("CHATORDER_EXAMPLES", 60)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


async def _sorted(db: Database, sid: str, cond: str = "", args: tuple = ()) -> list[str]:
    """The plain sort's order, as message ids (device-seq)."""
    rows = await db.read_all(
        f"SELECT device_id, seq FROM messages WHERE session_id=?{cond} ORDER BY lamport, device_id, seq",
        (sid, *args),
    )
    return [f"{r[0]}-{r[1]}" for r in rows]


def _ids(page: list[dict]) -> list[str]:
    return [m["id"] for m in page]


async def _check(db: Database, sid: str, size: int, at: int) -> None:
    want = await _sorted(db, sid)
    if not want:
        return
    assert [f"{m['device']}-{m['seq']}" for m in await db.list_messages(sid, all_chats=True, limit=1000)] == want
    ids = {f"{m['device']}-{m['seq']}": m["id"] for m in await db.list_messages(sid, all_chats=True, limit=1000)}
    want = [ids[k] for k in want]
    forwards: list[str] = []
    page = await db.list_messages(sid, all_chats=True, limit=size)
    while page:
        forwards += _ids(page)
        page = await db.list_messages(sid, all_chats=True, limit=size, after=page[-1]["id"])
    assert forwards == want
    backwards: list[str] = []
    page = await db.list_messages(sid, all_chats=True, limit=size, last=True)
    assert _ids(page) == want[-size:]
    while page:
        backwards = _ids(page) + backwards
        page = await db.list_messages(sid, all_chats=True, limit=size, before=page[0]["id"])
    assert backwards == want
    # a window between two cursors, as the API takes both
    lo, hi = sorted((at % len(want), (at * 7 + size) % len(want)))
    between = await db.list_messages(sid, all_chats=True, limit=1000, after=want[lo], before=want[hi])
    assert _ids(between) == want[lo + 1 : hi]
    conv = await db.conversation(sid)
    assert [f"{c[0]}-{c[1]}" for c in conv] == await _sorted(db, sid)
    # a fork copies the sort's prefix up to its message, in that order (its contents: the ids are new)
    point = await db.get_message(sid, want[at % len(want)])
    fork = await db.fork(sid, point["id"])
    copied = [c[4] for c in await db.conversation(fork["id"])]
    prefix = await db.read_all(
        "SELECT content FROM messages WHERE session_id=? AND (lamport, device_id, seq) <= (?,?,?)"
        " ORDER BY lamport, device_id, seq",
        (sid, point["lamport"], point["device"], point["seq"]),
    )
    assert copied == [r[0] for r in prefix]
    await db.delete_session(fork["id"])


async def _run(path: str, logs, size: int, at: int) -> None:
    db = await Database.open(path)
    try:
        other = (await db.create_session({"name": "beside"}))["id"]
        await db.append_messages(other, [{"role": "user", "content": "not this session's", "tokens": 1}])
        for lg in (lg for lg in logs if lg):  # (a device may have written nothing)
            await db.apply_remote(SID, {lg[0].device_id: _remote(lg)})
        await db.delete_session(other)
        await _check(db, SID, size, at)
    finally:
        await db.close()


def _example(logs, size: int, at: int) -> None:
    with tempfile.TemporaryDirectory(prefix="sd-order-", dir=SHM) as tmp:
        fresh_copy(f"{tmp}/db.sqlite")  # (a copy of one migrated database: freshdb.py)
        asyncio.run(_run(f"{tmp}/db.sqlite", logs, size, at))


@_SETTINGS
@given(logs=histories(), size=st.integers(1, 6), at=st.integers(0, 1 << 16))
def test_the_merged_order_is_the_sorts(logs, size, at):
    _example(logs, size, at)


@_SETTINGS
@given(logs=histories(collide=True), size=st.integers(1, 6), at=st.integers(0, 1 << 16))
def test_the_fallback_past_max_merged_is_the_sorts(logs, size, at):
    """A session of more chats than MAX_MERGED (set to 1 here, the branch a session of 401 chats takes)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(chatorder, "MAX_MERGED", 1)
        _example(logs, size, at)
