"""What a pull's apply (storage/applyremote.py) reads of a session held here: its row once at its transaction's
start, for all it needs of it then (whether it is being imported, its quota level before, its activity before),
and once at its end (the quota's level its writes brought)."""

from __future__ import annotations

import re
import time

from sessiond.storage.model import RemoteLog

REMOTE = "f0f0f0f0f0f0f0f0"


async def _pull(db, sid: str, seq: int, tokens: int) -> None:
    t = (await db.read_one("SELECT created_at FROM sessions WHERE id=?", (sid,)))[0]
    log = RemoteLog(REMOTE, [], [], seq)
    log.messages.append((sid, "main", REMOTE, seq, 1000 + seq, "assistant", "r", tokens, t + seq, None))
    await db.apply_remote(sid, {REMOTE: log})


async def test_a_pull_reads_the_session_row_once_before_applying(db):
    sid = (await db.create_session({"policy": {"token_quota": 100}}))["id"]
    await _pull(db, sid, 1, 10)
    seen: list[str] = []
    db.c._writer.set_trace_callback(seen.append)
    try:
        await _pull(db, sid, 2, 65)  # 75 of 100: the quota's level moves to "warning"
    finally:
        db.c._writer.set_trace_callback(None)
    tx = seen[seen.index("BEGIN IMMEDIATE") : seen.index("COMMIT")]
    first_write = next(i for i, s in enumerate(tx) if s.startswith("INSERT"))
    reads = [(i < first_write, s) for i, s in enumerate(tx) if re.match(r"SELECT [^;]* FROM sessions WHERE id='", s)]
    # before: three before its writes (importing; policy and tokens_used; last_activity) and, after them, a check
    # that the session the row was read of exists, besides the quota's level after
    assert [before for before, _ in reads] == [True, False], reads
    assert (await db.read_one("SELECT tokens_used FROM sessions WHERE id=?", (sid,)))[0] == 75


async def test_a_pulls_messages_move_the_session_row_in_one_update(db):
    """Their clock, their tokens and their arrival as the session's activity here: one UPDATE of the row (one run
    of its triggers), where the arrival was a second."""
    sid = (await db.create_session({}))["id"]
    await _pull(db, sid, 1, 10)
    seen: list[str] = []
    db.c._writer.set_trace_callback(seen.append)
    t0 = time.time()
    try:
        await _pull(db, sid, 2, 5)
    finally:
        db.c._writer.set_trace_callback(None)
    # (SQLite traces a statement again for each trigger program it runs: one run of repeats is one statement)
    ran = [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]
    assert len([s for s in ran if s.startswith("UPDATE sessions SET ")]) == 1, ran
    row = await db.read_one("SELECT lamport, tokens_used, last_activity FROM sessions WHERE id=?", (sid,))
    assert row[:2] == (1002, 15)
    assert row[2] >= round(t0, 3)  # (their arrival here, not their writer's stamps: test_clocks.py)


async def test_a_pull_of_messages_to_a_session_without_a_quota_reads_no_level_after(db):
    """Messages change no policy: a session with no token quota before them has none after, its level "safe"
    whatever its tokens, and the row is not read again for it (another device's change of the quota, an
    operation, is: test_share_quota.py)."""
    sid = (await db.create_session({}))["id"]
    await _pull(db, sid, 1, 10)
    seen: list[str] = []
    db.c._writer.set_trace_callback(seen.append)
    try:
        await _pull(db, sid, 2, 10**6)
    finally:
        db.c._writer.set_trace_callback(None)
    tx = seen[seen.index("BEGIN IMMEDIATE") : seen.index("COMMIT")]
    reads = [s for s in tx if re.match(r"SELECT [^;]* FROM sessions WHERE id='", s)]
    assert len(reads) == 1, reads  # before: the level after too
    assert (await db.read_one("SELECT tokens_used FROM sessions WHERE id=?", (sid,)))[0] == 10**6 + 10
