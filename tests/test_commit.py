"""Group commit (storage/connections.py): the write transactions of one turn of the event loop share one
SQLite commit, none is answered before its commit, and one that fails is undone alone."""

from __future__ import annotations

import asyncio
import os
import sqlite3

import pytest

from sessiond.storage.errors import ContextOverflow, NotFound


async def test_concurrent_appends_share_commits_and_each_is_committed_when_answered(db, tmp_path):
    sids = [(await db.create_session({}))["id"] for _ in range(8)]
    other = sqlite3.connect(os.path.join(tmp_path, "db.sqlite"))  # another connection: sees commits only
    seen_uncommitted = []

    async def append(sid: str, i: int) -> None:
        await db.append_messages(sid, [{"role": "user", "content": f"m{i}"}])
        n = other.execute("SELECT count(*) FROM messages WHERE session_id=?", (sid,)).fetchone()[0]
        if n < i + 1:  # answered before it was on disk
            seen_uncommitted.append((sid, i))

    async def writer(sid: str) -> None:
        for i in range(25):
            await append(sid, i)

    before = db.c.commits
    await asyncio.gather(*(writer(s) for s in sids))
    assert seen_uncommitted == []
    assert db.c.commits - before < 8 * 25  # shared: fewer commits than transactions
    for sid in sids:
        assert [m["content"] for m in await db.list_messages(sid)] == [f"m{i}" for i in range(25)]
    other.close()


async def test_a_failing_transaction_is_undone_alone_and_the_batch_commits(db, tmp_path):
    sid = (await db.create_session({}))["id"]

    async def fails() -> None:
        async with db.c.transaction() as tx:
            await tx.execute("UPDATE sessions SET name='half done' WHERE id=?", (sid,))
            raise RuntimeError("the block failed")

    results = await asyncio.gather(
        db.append_messages(sid, [{"role": "user", "content": "before"}]),
        fails(),
        db.append_messages(sid, [{"role": "user", "content": "after"}]),
        return_exceptions=True,
    )
    assert isinstance(results[1], RuntimeError)
    assert not isinstance(results[0], BaseException) and not isinstance(results[2], BaseException)
    other = sqlite3.connect(os.path.join(tmp_path, "db.sqlite"))
    assert other.execute("SELECT name FROM sessions WHERE id=?", (sid,)).fetchone()[0] != "half done"
    rows = other.execute("SELECT content FROM messages WHERE session_id=? ORDER BY seq", (sid,)).fetchall()
    other.close()
    assert [r[0] for r in rows] == ["before", "after"]


async def test_a_cancelled_caller_does_not_cancel_the_commit_of_the_others(db):
    sid = (await db.create_session({}))["id"]
    first = asyncio.ensure_future(db.append_messages(sid, [{"role": "user", "content": "a"}]))
    second = asyncio.ensure_future(db.append_messages(sid, [{"role": "user", "content": "b"}]))
    await asyncio.sleep(0)  # both have written (inline) and wait for the commit they share
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await second
    # the first's caller stopped waiting, but what it wrote was in the batch, committed with the second
    assert [m["content"] for m in await db.list_messages(sid)] == ["a", "b"]


async def test_a_commit_due_while_a_transaction_is_open_waits_for_its_end(db, tmp_path):
    """The batch's COMMIT runs at once when no one holds the writer, else it waits its turn: a transaction
    whose block awaits past the scheduled commit is not committed half done, and is committed when it ends."""
    sid = (await db.create_session({}))["id"]
    other = sqlite3.connect(os.path.join(tmp_path, "db.sqlite"))
    before = db.c.commits
    async with db.c.transaction() as tx:
        await tx.execute("UPDATE sessions SET name='one' WHERE id=?", (sid,))
        for _ in range(3):  # the commit scheduled by this transaction's BEGIN comes due meanwhile
            await asyncio.sleep(0)
        assert db.c.commits == before
        assert other.execute("SELECT name FROM sessions WHERE id=?", (sid,)).fetchone()[0] != "one"
        await tx.execute("UPDATE sessions SET name='two' WHERE id=?", (sid,))
    assert db.c.commits == before + 1
    assert other.execute("SELECT name FROM sessions WHERE id=?", (sid,)).fetchone()[0] == "two"
    other.close()


async def test_a_chat_budget_holds_when_only_the_chat_has_one(db):
    """The append skips the context count when neither the session nor its chat has a budget; a chat with
    a budget of its own in a session without one is still counted, compacted or refused."""
    sid = (await db.create_session({}))["id"]
    tight = await db.create_chat(sid, {"name": "tight", "policy": {"max_context_tokens": 50, "auto_compact": False}})
    roomy = await db.create_chat(sid, {"name": "roomy", "policy": {"max_context_tokens": 100}})
    for _ in range(3):  # the session's own chat: no budget at all
        await db.append_messages(sid, [{"role": "user", "content": "x", "tokens": 30}])
    await db.append_messages(sid, [{"role": "user", "content": "a", "tokens": 30}], tight["id"])
    with pytest.raises(ContextOverflow):
        await db.append_messages(sid, [{"role": "user", "content": "b", "tokens": 30}], tight["id"])
    for i in range(4):  # past 80 of 100: compacted down to 40 first
        await db.append_messages(sid, [{"role": "user", "content": f"r{i}", "tokens": 30}], roomy["id"])
    ctx = await db.budgets.context(sid, roomy["id"])
    assert ctx["compacted_messages"] > 0 and ctx["active_tokens"] <= 80
    assert [m["content"] for m in await db.list_messages(sid, chat=tight["id"])] == ["a"]
    assert len(await db.list_messages(sid)) == 3


async def test_a_failing_transaction_that_opened_the_batch_is_undone_whole_and_the_next_commits(db, tmp_path):
    """The transaction that opens a batch has no SAVEPOINT (nothing else is in the batch while it holds the
    writer): if its block raises, the SQLite transaction is rolled back whole, and those waiting for the
    writer meanwhile start a new batch of their own and are committed."""
    sid = (await db.create_session({}))["id"]
    await db.append_messages(sid, [{"role": "user", "content": "kept"}])

    async def fails() -> None:
        async with db.c.transaction() as tx:
            await tx.execute("UPDATE sessions SET name='half done' WHERE id=?", (sid,))
            await asyncio.sleep(0)  # the append below queues for the writer meanwhile
            raise RuntimeError("the block failed")

    first = asyncio.ensure_future(fails())
    await asyncio.sleep(0)  # it has opened the batch and holds the writer
    assert db.c.group.batch is not None
    results = await asyncio.gather(
        first, db.append_messages(sid, [{"role": "user", "content": "after"}]), return_exceptions=True
    )
    assert isinstance(results[0], RuntimeError) and not isinstance(results[1], BaseException)
    assert not db.c._writer.in_transaction
    other = sqlite3.connect(os.path.join(tmp_path, "db.sqlite"))
    assert other.execute("SELECT name FROM sessions WHERE id=?", (sid,)).fetchone()[0] != "half done"
    rows = other.execute("SELECT content FROM messages WHERE session_id=? ORDER BY seq", (sid,)).fetchall()
    other.close()
    assert [r[0] for r in rows] == ["kept", "after"]
    # a refused append (bad input) opening its batch changes nothing and leaves the writer usable
    with pytest.raises(NotFound):
        await db.append_messages("no-such-session", [{"role": "user", "content": "x"}])
    await db.append_messages(sid, [{"role": "user", "content": "last"}])
    assert [m["content"] for m in await db.list_messages(sid)] == ["kept", "after", "last"]


async def test_a_write_goes_on_in_the_loop_turn_after_its_commit(db):
    """The caller of a transaction is woken by its COMMIT itself, not through a chain of callbacks (each a
    turn of the loop more, an epoll wait and the loop's bookkeeping for every append): a write alone takes
    two turns, its block's and the COMMIT's, and goes on in the third."""
    sid = (await db.create_session({}))["id"]
    turns = 0
    stop = False

    async def tick() -> None:  # one increment per turn of the loop
        nonlocal turns
        while not stop:
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.ensure_future(tick())
    await asyncio.sleep(0)
    counts = []
    for i in range(5):
        before = turns
        await db.c.write("UPDATE sessions SET name=? WHERE id=?", (f"n{i}", sid))
        counts.append(turns - before)
    stop = True
    await ticker
    assert counts == [2] * 5
    assert (await db.get_session(sid))["name"] == "n4"


async def test_appends_that_waited_for_the_writer_share_one_commit_after_it(db):
    """Writes queued on the writer (behind a transaction that awaits inside its block, the search index's
    chunk on its thread, a WAL reset) go on one at a time, a loop turn each, when it is let go: they join
    one batch and share its COMMIT, rather than each committing alone in the turn before the next one's."""
    sids = [(await db.create_session({}))["id"] for _ in range(6)]
    held = asyncio.Event()
    go = asyncio.Event()

    async def holder() -> None:
        async with db.c.transaction() as tx:
            await tx.execute("UPDATE sessions SET name='held' WHERE id=?", (sids[0],))
            held.set()
            await go.wait()

    first = asyncio.ensure_future(holder())
    await held.wait()
    queued = [asyncio.ensure_future(db.append_messages(s, [{"role": "user", "content": "x"}])) for s in sids[1:]]
    for _ in range(3):  # each has started, and waits for the writer
        await asyncio.sleep(0)
    before = db.c.commits
    go.set()
    await asyncio.gather(first, *queued)
    assert db.c.commits - before == 2  # the holder's batch, then one for the five that waited
    for s in sids[1:]:
        assert [m["content"] for m in await db.list_messages(s)] == ["x"]
