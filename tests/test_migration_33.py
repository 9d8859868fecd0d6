"""Migration 33: each session's quota count (`tokens_used`) recounted from its messages, as 0.37.0 charges them. A
request for several answers (OpenAI's `n`) records one, its `tokens` that answer's, and is charged what the provider
billed for all (`usage.completion_tokens`); a 0.36.0 device charged such an answer its own `tokens` alone when it
pulled it from a 0.37.0 device, and kept that count after its upgrade: the session's `tokens_used` (its quota, `stats`)
differed from every other device's for good, the quota there under what was billed. Recounted once at the upgrade, a
session every device counts the same; recounted again, nothing is charged twice."""

from __future__ import annotations

import json
import sqlite3

from sessiond.storage.database import Database
from sessiond.storage.migrations import SCHEMA_VERSION
from sessiond.storage.model import RECOUNT_SQL
from test_migration_30 import _version

N_ANSWER = {"tokens": 5, "usage": {"prompt_tokens": 10, "completion_tokens": 27}}  # three answers billed, one kept


def _used(path: str, sid: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT tokens_used FROM sessions WHERE id=?", (sid,)).fetchone()[0]
    finally:
        conn.close()


async def test_the_quota_of_an_n_answer_a_036_device_counted_is_recounted_at_the_upgrade(tmp_path):
    assert SCHEMA_VERSION >= 33
    path = str(tmp_path / "sessions.db")
    old = await Database.open(path)  # (its rows as a home of schema 32 holds them: migration 33 writes no table)
    try:
        sid = (await old.create_session({"name": "n answers"}))["id"]
        other = (await old.create_session({"name": "no messages"}))["id"]
        await old.append_messages(sid, [{"role": "user", "content": "count", "tokens": 2}])
        await old.append_messages(sid, [{"role": "assistant", "content": "one two", **N_ANSWER}], answer=True)
    finally:
        await old.close()
    assert _used(path, sid) == 2 + 10 + 27  # as 0.37.0 charged it
    conn = sqlite3.connect(path)
    with conn:  # as a 0.36.0 device counted it, pulled: the answer's own tokens and its prompt's; at schema 32
        conn.execute("UPDATE sessions SET tokens_used=? WHERE id=?", (2 + 5 + 10, sid))
        conn.execute("UPDATE schema_version SET version=32")
    conn.close()
    assert _version(path) == 32
    for _ in range(2):  # (the second open finds it done: nothing recounted, nothing charged twice)
        db = await Database.open(path)
        try:
            assert (await db.get_session(sid))["tokens_used"] == 2 + 10 + 27
            assert (await db.get_session(other))["tokens_used"] == 0
            [(recount,)] = await db.c.committed.fetchall(f"SELECT {RECOUNT_SQL}", (sid,))
            assert recount == 2 + 10 + 27  # the migration's count is the pull's recount (model.CHARGE_SUM_SQL)
        finally:
            await db.close()
        assert _version(path) == SCHEMA_VERSION


def test_the_migration_counts_as_the_pulls_recount_does():
    """The migration's SQL is frozen (a migration is never edited); the charge a pull's recount sums is the code's
    (storage/model.py). Every kind of row they read, counted the same."""
    from sessiond.storage.migrations import MIGRATIONS

    rows = [
        (5, {"usage": {"prompt_tokens": 10, "completion_tokens": 27}}),
        (5, {"usage": {"prompt_tokens": 10, "completion_tokens": 5}}),
        (9, {"usage": {"completion_tokens": 4}}),
        (3, {"usage": {"completion_tokens": "40", "prompt_tokens": True}}),
        (None, {"usage": {"completion_tokens": 7}}),
        (2, None),
        (4, "not json"),
    ]
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE sessions (id TEXT, tokens_used INTEGER)")
    db.execute("CREATE TABLE messages (session_id TEXT, tokens INTEGER, extra TEXT)")
    db.executemany("INSERT INTO sessions VALUES (?, 0)", [("a",), ("b",)])
    for tokens, extra in rows:
        e = extra if isinstance(extra, str) or extra is None else json.dumps(extra)
        db.execute("INSERT INTO messages VALUES ('a', ?, ?)", (tokens, e))
    db.executescript(MIGRATIONS[32])
    [(migrated,)] = db.execute("SELECT tokens_used FROM sessions WHERE id='a'").fetchall()
    [(recount,)] = db.execute(f"SELECT {RECOUNT_SQL}", ("a",)).fetchall()
    assert migrated == recount == 37 + 15 + 9 + 3 + 7 + 2 + 4
    assert db.execute("SELECT tokens_used FROM sessions WHERE id='b'").fetchall() == [(0,)]
