"""Calls whose cost followed the whole home or session rather than what they return (bench/scale.py,
bench/results/profile-scale.md). Each test counts the work SQLite does for the call (its virtual machine's
steps, through the progress handler, on the writer and the reader) in a small and a ten times larger home
or session, and holds the call to a cost that does not grow with it: structural, never a timed threshold."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

CHATS = ("main", "second", "third")


@contextlib.contextmanager
def vm_steps(db) -> Iterator[list[int]]:
    """The SQLite VM steps (in hundreds) run on the database's connections within the block."""
    n = [0]

    def tick() -> int:
        n[0] += 1
        return 0

    conns = (db.c._writer, db.c._reader)
    for conn in conns:
        conn.set_progress_handler(tick, 100)
    try:
        yield n
    finally:
        for conn in conns:
            conn.set_progress_handler(None, 0)


async def _session(db, per_chat: int) -> str:
    sid = (await db.create_session({"name": "long"}))["id"]
    for chat in CHATS[1:]:
        await db.create_chat(sid, {"id": chat, "name": chat})
    for chat in CHATS:
        for start in range(0, per_chat, 2000):
            batch = [
                {"role": "user" if j % 2 == 0 else "assistant", "content": f"{chat} {j} lorem ipsum", "tokens": 4}
                for j in range(start, min(per_chat, start + 2000))
            ]
            await db.append_messages(sid, batch, chat)
    return sid


async def _steps_per_size(db, call) -> list[int]:
    """The VM steps of `call(sid)` on a session of 300 then 3,000 messages a chat."""
    out = []
    for per_chat in (300, 3000):
        sid = await _session(db, per_chat)
        await call(sid)  # (warm: the statements prepared)
        with vm_steps(db) as n:
            await call(sid)
        out.append(n[0])
    return out


async def test_a_page_of_every_chat_reads_the_page_not_the_session(db):
    """`log --all` (GET .../messages?all=true): the first page, the last and one after a cursor read each chat's
    messages by the index as far as the page goes; they sorted every message of the session."""

    async def pages(sid: str) -> None:
        first = await db.list_messages(sid, all_chats=True, limit=50)
        assert [m["chat"] for m in first[:3]] == ["main", "main", "main"]  # (the order: global, as before)
        await db.list_messages(sid, all_chats=True, limit=50, after=first[-1]["id"])
        await db.list_messages(sid, all_chats=True, limit=50, last=True)

    small, large = await _steps_per_size(db, pages)
    assert large < small * 1.5, (small, large)


async def test_every_chat_in_global_order(db):
    """The merged read gives what the sorted one gave: every chat's messages, interleaved by (lamport, device,
    seq), forwards and backwards, past a cursor."""
    sid = (await db.create_session({"name": "mixed"}))["id"]
    for chat in CHATS[1:]:
        await db.create_chat(sid, {"id": chat, "name": chat})
    for j in range(40):
        await db.append_messages(sid, [{"role": "user", "content": f"m{j}", "tokens": 1}], CHATS[(j * 7) % 3])
    want = [
        dict(r)["content"]
        for r in await db.c.committed.fetchall(
            "SELECT content FROM messages WHERE session_id=? ORDER BY lamport, device_id, seq", (sid,)
        )
    ]
    got = await db.list_messages(sid, all_chats=True, limit=100)
    assert [m["content"] for m in got] == want
    assert [m["content"] for m in await db.list_messages(sid, all_chats=True, limit=7, last=True)] == want[-7:]
    after = await db.list_messages(sid, all_chats=True, limit=5, after=got[9]["id"])
    assert [m["content"] for m in after] == want[10:15]
    before = await db.list_messages(sid, all_chats=True, limit=5, before=got[9]["id"])
    assert [m["content"] for m in before] == want[4:9]
    assert [c[4] for c in await db.conversation(sid)] == want


async def test_a_fork_early_in_a_long_session_reads_what_it_copies(db):
    """A fork at the 20th message copies 20 messages: it read and sorted every message of the session first."""
    forks = []

    async def fork(sid: str) -> None:
        at = (await db.list_messages(sid, all_chats=True, limit=20))[-1]["id"]
        forks.append(await db.fork(sid, at))

    small, large = await _steps_per_size(db, fork)
    assert all(f["message_count"] == 20 for f in forks), [f["message_count"] for f in forks]
    assert large < small * 1.5, (small, large)
