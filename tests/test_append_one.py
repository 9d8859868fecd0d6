"""An append of one message is one statement (storage/appendone.py) with no SAVEPOINT in a shared commit
(storage/groupcommit.py, lazy_savepoint and execute_alone): the same rows as the batch's four statements, one
that fails undone alone with the others of its commit kept, a refusal found by reads writing nothing."""

from __future__ import annotations

import asyncio
import os
import sqlite3

from sessiond.storage.errors import QuotaExceeded


def _state(path: str, sid: str) -> dict:
    """What an append writes, as another connection reads it (the committed state)."""
    other = sqlite3.connect(path)
    try:
        return {
            "messages": other.execute(
                "SELECT content, seq, lamport, tokens FROM messages WHERE session_id=? ORDER BY seq", (sid,)
            ).fetchall(),
            "last_seq": other.execute("SELECT last_seq FROM logs WHERE session_id=?", (sid,)).fetchall(),
            "session": other.execute("SELECT lamport, tokens_used FROM sessions WHERE id=?", (sid,)).fetchone(),
            "keys": other.execute(
                "SELECT key, result FROM idempotency WHERE session_id=? ORDER BY created_at, key", (sid,)
            ).fetchall(),
        }
    finally:
        other.close()


def _statements(db) -> list[str]:
    seen: list[str] = []
    db.c._writer.set_trace_callback(seen.append)
    return seen


async def test_one_message_writes_what_a_batch_of_one_writes(db, tmp_path):
    path = os.path.join(tmp_path, "db.sqlite")
    one, batch = [(await db.create_session({}))["id"] for _ in range(2)]
    seen = _statements(db)
    try:
        for sid in (one, batch):
            await db.append_messages(sid, [{"role": "user", "content": "hello", "tokens": 3}], key="k1")
        # the second appended as a batch would be (statements after the message's INSERT): a checkpoint mark
        # passed (interval 1) takes the batch's way
        await db.update_session(batch, {"policy": {"checkpoint_interval": 1}})
        await db.append_messages(one, [{"role": "user", "content": "again", "tokens": 4}], key="k2")
        await db.append_messages(batch, [{"role": "user", "content": "again", "tokens": 4}], key="k2")
    finally:
        db.c._writer.set_trace_callback(None)
    # (SQLite traces the statement again for each trigger program it runs: one run of repeats is one statement)
    ran = [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]
    assert sum(s.startswith("INSERT INTO append_one(") for s in ran) == 3  # `one`'s two, the first of `batch`'s
    assert sum(s.startswith("INSERT INTO idempotency(") for s in ran) == 1  # the batch way's KEY_INSERT
    # (each session's log: its creation is seq 1; `batch`'s policy update is its seq 3)
    a, b = _state(path, one), _state(path, batch)
    assert a["messages"] == [("hello", 2, 2, 3), ("again", 3, 3, 4)]
    assert b["messages"] == [("hello", 2, 2, 3), ("again", 4, 4, 4)]
    assert (a["last_seq"], b["last_seq"]) == ([(3,)], [(4,)])
    assert (a["keys"], b["keys"]) == ([("k1", "2 1"), ("k2", "3 1")], [("k1", "2 1"), ("k2", "4 1")])
    assert (a["session"], b["session"]) == ((3, 7), (4, 7))
    assert [m["content"] for m in await db.list_messages(one)] == ["hello", "again"]
    assert (await db.append_messages(one, [{"role": "user", "content": "again", "tokens": 4}], key="k2"))[0][
        "seq"
    ] == 3  # a retry answered as the first time


async def test_an_append_that_fails_in_its_one_statement_is_undone_alone_and_its_commit_goes_on(db, tmp_path):
    path = os.path.join(tmp_path, "db.sqlite")
    sid = (await db.create_session({}))["id"]
    # the statement's last write fails (a trigger of the writer's own: a real failure, after the message, the
    # log and the session were written by the same statement)
    db.c._writer.execute(
        "CREATE TEMP TRIGGER fails AFTER INSERT ON main.idempotency WHEN new.key='fails'"
        " BEGIN SELECT RAISE(ABORT, 'the key failed'); END"
    )
    seen = _statements(db)
    commits = db.c.commits
    try:
        results = await asyncio.gather(
            db.append_messages(sid, [{"role": "user", "content": "before", "tokens": 1}], key="a"),
            db.append_messages(sid, [{"role": "user", "content": "lost", "tokens": 10}], key="fails"),
            db.append_messages(sid, [{"role": "user", "content": "after", "tokens": 2}], key="b"),
            return_exceptions=True,
        )
    finally:
        db.c._writer.set_trace_callback(None)
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert not isinstance(results[0], BaseException) and not isinstance(results[2], BaseException)
    assert db.c.commits - commits == 1  # the three shared one commit: the failing one was not the first
    assert not any(s.startswith(("SAVEPOINT", "ROLLBACK", "RELEASE")) for s in seen)
    state = _state(path, sid)
    assert state["messages"] == [("before", 2, 2, 1), ("after", 3, 3, 2)]
    assert state["last_seq"] == [(3,)] and state["session"] == (3, 3)
    assert [k for k, _ in state["keys"]] == ["a", "b"]


async def test_a_refusal_in_a_shared_commit_writes_nothing_and_opens_no_savepoint(db, tmp_path):
    path = os.path.join(tmp_path, "db.sqlite")
    sid = (await db.create_session({}))["id"]
    full = (await db.create_session({"policy": {"token_quota": 5}}))["id"]
    await db.append_messages(full, [{"role": "user", "content": "x", "tokens": 5}])
    seen = _statements(db)
    try:
        results = await asyncio.gather(
            db.append_messages(sid, [{"role": "user", "content": "one", "tokens": 1}]),
            db.append_messages(full, [{"role": "user", "content": "over", "tokens": 1}]),
            db.append_messages(sid, [{"role": "user", "content": "two", "tokens": 1}]),
            return_exceptions=True,
        )
    finally:
        db.c._writer.set_trace_callback(None)
    assert isinstance(results[1], QuotaExceeded)
    assert not any(s.startswith(("SAVEPOINT", "ROLLBACK", "RELEASE")) for s in seen)
    assert [m[0] for m in _state(path, sid)["messages"]] == ["one", "two"]
    assert [m[0] for m in _state(path, full)["messages"]] == ["x"]


async def test_a_lazy_transaction_opens_its_savepoint_at_its_first_write_and_is_undone_by_it(db, tmp_path):
    sid = (await db.create_session({"name": "kept"}))["id"]

    async def half_done() -> None:
        async with db.c.transaction(lazy_savepoint=True) as tx:
            await tx.fetchone("SELECT name FROM sessions WHERE id=?", (sid,))
            await tx.execute("UPDATE sessions SET name='half done' WHERE id=?", (sid,))
            raise RuntimeError("the block failed")

    seen = _statements(db)
    try:
        results = await asyncio.gather(
            db.append_messages(sid, [{"role": "user", "content": "before"}]), half_done(), return_exceptions=True
        )
    finally:
        db.c._writer.set_trace_callback(None)
    assert isinstance(results[1], RuntimeError)
    i = seen.index("SAVEPOINT tx")
    assert seen[i - 1].startswith("SELECT name") and seen[i + 1].startswith("UPDATE sessions SET name")
    assert (await db.get_session(sid))["name"] == "kept"
    assert [m["content"] for m in await db.list_messages(sid)] == ["before"]


async def test_a_failure_after_a_write_alone_rolls_its_whole_commit_back(db, tmp_path):
    """A write after execute_alone's is refused (it must be the transaction's last); the batch it was in is
    rolled back whole, since nothing can undo that transaction alone, and each of its callers is told."""
    path = os.path.join(tmp_path, "db.sqlite")
    sid = (await db.create_session({"name": "kept"}))["id"]

    async def two_writes() -> None:
        async with db.c.transaction(lazy_savepoint=True) as tx:
            await tx.execute_alone("UPDATE sessions SET name='alone' WHERE id=?", (sid,))
            await tx.execute("UPDATE sessions SET name='second' WHERE id=?", (sid,))

    commits = db.c.commits
    results = await asyncio.gather(
        db.append_messages(sid, [{"role": "user", "content": "batched with it"}]), two_writes(), return_exceptions=True
    )
    assert isinstance(results[1], AssertionError) and "execute_alone" in str(results[1])
    assert isinstance(results[0], sqlite3.OperationalError) and "rolled back" in str(results[0])
    assert db.c.commits == commits
    assert (await db.get_session(sid))["name"] == "kept"
    assert _state(path, sid)["messages"] == []
    await db.append_messages(sid, [{"role": "user", "content": "next"}])  # the writer goes on
    assert [m[0] for m in _state(path, sid)["messages"]] == ["next"]
