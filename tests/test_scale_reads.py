"""Calls whose cost followed the whole home or session rather than what they return (bench/scale.py,
bench/results/profile-scale.md). Each test counts the work SQLite does for the call (its virtual machine's
steps, through the progress handler, on the writer and the reader) in a small and a ten times larger home
or session, and holds the call to a cost that does not grow with it: structural, never a timed threshold."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sessiond.storage.context import active, chat_budget

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


async def test_a_chats_context_reads_no_message_row(db):
    """`sessiond context` (GET .../context) read every active message of the chat into Python to count them and
    their tokens (80 ms for 33,000). Now the tokens come from the totals kept by trigger and the counts from
    indexes alone: every statement it runs that names the messages is answered by an index (SQLite's query plan
    of it: a covering index, or migration 23's partial index of the system messages), compacted chat or not, and
    its numbers are the full recount's."""
    sid = await _session(db, 200)
    for j in range(0, 60, 7):  # system messages on both sides of the cut to come
        await db.append_messages(sid, [{"role": "system", "content": f"rule {j}", "tokens": 2}], "second")
        await db.append_messages(sid, [{"role": "user", "content": f"q {j}", "tokens": 3}] * 5, "second")
    await db.compact(sid, "second", target_tokens=40)
    for chat in CHATS:
        statements: list[str] = []
        for conn in (db.c._writer, db.c._reader):
            conn.set_trace_callback(statements.append)
        try:
            ctx = await db.context(sid, chat)
        finally:
            for conn in (db.c._writer, db.c._reader):
                conn.set_trace_callback(None)
        plans = []
        for sql in (s for s in statements if " messages " in s.replace("\n", " ")):
            plans += [r[3] for r in await db.read_all("EXPLAIN QUERY PLAN " + sql) if "messages" in r[3]]
        assert all("COVERING INDEX" in p or "messages_system" in p for p in plans), (chat, plans)
        assert bool(plans) == (chat == "second"), (chat, plans)  # (a chat's count is kept: only a cut is sought)
        budget, cut = await chat_budget(db.c.committed, sid, chat, {})
        rows = await active(db.c.committed, sid, chat, cut)
        total = len(await db.read_all("SELECT 1 FROM messages WHERE session_id=? AND chat_id=?", (sid, chat)))
        assert (ctx["active_messages"], ctx["active_tokens"], ctx["messages"]) == (
            len(rows),
            sum(r[4] for r in rows),
            total,
        ), chat
        assert (cut is not None) == (chat == "second") and ctx["compacted_messages"] == total - len(rows)


async def test_a_compacted_chats_context_seeks_from_its_cut(db):
    """`context` of a compacted chat counted the chat's whole range of the index for its total (1.8 ms for 33,000):
    the total is the chat's kept count now, and the active messages a seek from the cut. The same work (VM steps)
    for a chat of 300 and of 3,000 messages compacted to the same few."""
    out = []
    for per_chat in (300, 3000):
        sid = await _session(db, per_chat)
        await db.compact(sid, "second", target_tokens=40)
        ctx = await db.context(sid, "second")
        assert (ctx["messages"], ctx["active_messages"]) == (per_chat, 10), ctx
        with vm_steps(db) as n:
            await db.context(sid, "second")
        out.append(n[0])
    small, large = out
    assert large < small * 1.5, (small, large)
