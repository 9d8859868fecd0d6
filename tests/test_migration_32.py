"""Migration 32 (claims_walks) on a database of schema 31 with a session: the session is kept, the new table is empty
(no walk kept: the first pull walks from the author's head, as before), it takes a walk's cuts and drops them, a
session's rows go with it, and a database opened again is not migrated again."""

from __future__ import annotations

from sessiond.storage.database import Database
from sessiond.storage.migrations import SCHEMA_VERSION
from test_migration_30 import _version


async def test_a_database_of_schema_31_keeps_its_sessions_and_holds_no_walk(tmp_path):
    assert SCHEMA_VERSION >= 32
    path = str(tmp_path / "sessions.db")
    old = await Database.open(path, upto=31)
    try:
        sid = (await old.create_session({"name": "before the walks kept"}))["id"]
    finally:
        await old.close()
    assert _version(path) == 31
    for _ in range(2):  # (the second open finds it done: nothing runs again)
        db = await Database.open(path)
        try:
            assert (await db.get_session(sid))["name"] == "before the walks kept"
            walks = db.syncstate.claims_walks
            assert await walks.get(sid, b"w" * 32) is None
            await walks.put(sid, b"w" * 32, b"\x80")
            await walks.put(sid, b"w" * 32, b"\x81")  # (in place of the one before)
            assert await walks.get(sid, b"w" * 32) == b"\x81"
            await walks.drop(sid, b"w" * 32)
            assert await walks.get(sid, b"w" * 32) is None
            await walks.put("no such session", b"w" * 32, b"\x80")  # (nothing: no row of a session gone)
            assert await db.c.committed.fetchall("SELECT * FROM claims_walks") == []
        finally:
            await db.close()
        assert _version(path) == SCHEMA_VERSION
    db = await Database.open(path)
    try:
        await db.syncstate.claims_walks.put(sid, b"w" * 32, b"\x80")
        await db.delete_session(sid)
        assert await db.c.committed.fetchall("SELECT * FROM claims_walks") == []
    finally:
        await db.close()
