"""Faults injected into shared commits (storage/groupcommit.py) of one-statement appends (storage/appendone.py,
`execute_alone`, no SAVEPOINT) among batched appends, compactions and other transactions: a statement that SQLite
undoes alone (RAISE(ABORT) in the append's own INSERT), one after which SQLite rolls the whole transaction back
(RAISE(ROLLBACK): in an append's statement, or in another transaction's), a transaction whose block raises after
its writes, refusals found by reads. Whatever the mix in a turn of the loop, an append is answered as stored if
and only if its messages are committed, with its key's record and its log's seq, and an event is told for every
message committed and no other. No defect found: the review of the twenty-sixth pass."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3

import pytest

from sessiond.storage.database import Database

FAULTS = """
CREATE TEMP TABLE boom(x);
CREATE TEMP TRIGGER boom_rollback AFTER INSERT ON boom BEGIN SELECT RAISE(ROLLBACK, 'injected'); END;
CREATE TEMP TRIGGER message_rollback AFTER INSERT ON main.messages WHEN new.content LIKE '%rollback'
    BEGIN SELECT RAISE(ROLLBACK, 'injected'); END;
CREATE TEMP TRIGGER message_abort AFTER INSERT ON main.messages WHEN new.content LIKE '%abort'
    BEGIN SELECT RAISE(ABORT, 'injected'); END;
"""


@pytest.mark.parametrize("seed", range(3))
async def test_a_batchs_faults_leave_each_caller_told_what_was_committed(tmp_path, seed):
    rnd = random.Random(seed)
    path = os.path.join(tmp_path, "db.sqlite")
    db = await Database.open(path)
    told: dict[str, str] = {}  # each message's content: "ok" if its append was answered as stored
    try:
        db.c._writer.executescript(FAULTS)  # (the writer's own, as appendone.py's view)
        events: list[dict] = []
        db.listeners.append(events.append)
        # (every other session has a context budget its appends pass: a compaction's writes before the append's)
        sids = [
            (await db.create_session({"policy": {"max_context_tokens": 200}} if k % 2 else {}))["id"] for k in range(4)
        ]

        async def append(i: int) -> None:
            sid = rnd.choice([*sids, "absent"])
            suffix = ["", "", "", "", "", "abort", "rollback"]
            n = 1 if rnd.random() < 0.8 else 2
            msgs = [
                {"role": "user", "content": f"m{i}.{k}{rnd.choice(suffix)}", "tokens": rnd.randint(1, 30)}
                for k in range(n)
            ]
            try:
                await db.append_messages(sid, msgs, key=f"k{i}" if i % 2 else None)
                outcome = "ok"
            except Exception as exc:  # (each refusal or fault by its type)
                outcome = type(exc).__name__
            told.update((m["content"], outcome) for m in msgs)

        async def other(i: int, rollback: bool) -> None:
            try:
                async with db.c.transaction() as tx:
                    await tx.execute("UPDATE sessions SET name=? WHERE id=?", (f"other {i}", sids[0]))
                    if not rollback:
                        raise ValueError("the block fails after its write")
                    await tx.execute("INSERT INTO boom VALUES (1)")
            except (ValueError, sqlite3.Error):
                pass

        for turn in range(30):
            calls = []
            for j in range(rnd.randint(1, 20)):
                r, i = rnd.random(), turn * 100 + j
                calls.append(other(i, rollback=r < 0.08) if r < 0.16 else append(i))
            await asyncio.gather(*calls)
    finally:
        await db.close()
    conn = sqlite3.connect(path)
    try:
        stored = {r[0] for r in conn.execute("SELECT content FROM messages")}
        ids = {f"{d}-{s}" for d, s in conn.execute("SELECT device_id, seq FROM messages")}
        orphan_keys = conn.execute(
            "SELECT count(*) FROM idempotency i WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE"
            " m.session_id=i.session_id AND m.seq=CAST(substr(i.result, 1, instr(i.result, ' ') - 1) AS INTEGER))"
        ).fetchone()[0]
        seq_off = conn.execute(
            "SELECT count(*) FROM logs l WHERE last_seq <> (SELECT max(seq) FROM (SELECT seq FROM messages WHERE"
            " session_id=l.session_id AND device_id=l.device_id UNION ALL SELECT seq FROM ops WHERE"
            " session_id=l.session_id AND device_id=l.device_id))"
        ).fetchone()[0]
    finally:
        conn.close()
    outcomes = set(told.values())
    assert {"ok", "OperationalError", "IntegrityError", "NotFound"} <= outcomes, outcomes  # (what it tests)
    assert [c for c, o in told.items() if (o == "ok") != (c in stored)] == []
    appended = {i for e in events if e["type"] == "messages.appended" for i in e["ids"]}
    assert appended == ids
    assert (orphan_keys, seq_off) == (0, 0)
