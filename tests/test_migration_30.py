"""Migration 30 (sync_state.head_manifest, logs_seen) on a database of schema 29 with a session pushed: the push state
is kept as it was, the manifest of its head is not known (NULL: the push after it goes on as before, and records it),
the new table is empty, and a database opened again is not migrated again."""

from __future__ import annotations

import sqlite3

from sessiond.storage.database import Database
from sessiond.storage.migrations import SCHEMA_VERSION


def _version(path: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT version FROM schema_version").fetchone()[0]
    finally:
        conn.close()


async def test_a_database_of_schema_29_keeps_its_push_state_and_knows_no_head_manifest(tmp_path):
    assert SCHEMA_VERSION >= 30
    path = str(tmp_path / "sessions.db")
    old = await Database.open(path, upto=29)
    try:
        sid = (await old.create_session({"name": "pushed before"}))["id"]
        async with old.c.transaction() as tx:  # as a push of schema 29 left it
            await tx.execute(
                "INSERT OR REPLACE INTO sync_state(session_id, pushed_seq, head_rev, tree) VALUES (?, 2, 3, x'80')",
                (sid,),
            )
    finally:
        await old.close()
    assert _version(path) == 29
    for _ in range(2):  # (the second open finds it done: nothing runs again)
        db = await Database.open(path)
        try:
            state = await db.sync_state(sid)
            assert (state["pushed_seq"], state["head_rev"], bytes(state["tree"])) == (2, 3, b"\x80"), state
            assert state["head_manifest"] is None
            assert state["head_announce"] is None  # (31: the slot its head was sealed on not known: nothing owed)
            assert await db.c.committed.fetchall("SELECT * FROM logs_seen") == []
            await db.save_pushed(sid, None, head_manifest=b"m" * 32)
            assert bytes((await db.sync_state(sid))["head_manifest"]) == b"m" * 32
            await db.save_pushed(sid, None, head_manifest=None)
            await db.save_pushed(sid, None, head_announce=b"a" * 32)
            assert bytes((await db.sync_state(sid))["head_announce"]) == b"a" * 32
            await db.save_pushed(sid, None, head_announce=None)
        finally:
            await db.close()
        assert _version(path) == SCHEMA_VERSION
