"""The database schema: its migrations, applied in order, one per transaction, and the version stored. A new database
(version 0, empty) is made at once from the schema they leave (freshschema.py), in one transaction."""

from __future__ import annotations

import sqlite3
from typing import Any

from . import freshschema
from .errors import crash_at
from .migrations import MIGRATIONS, SCHEMA_VERSION


class NewerSchema(Exception):
    """The database was written by a newer sessiond: its schema version is past this one's."""

    def __init__(self, version: int):
        super().__init__(f"schema version {version}, newer than this sessiond's ({SCHEMA_VERSION})")
        self.version = version


def statements(script: str) -> list[str]:
    """A migration's SQL cut into its statements: at each ";" that ends one (sqlite3.complete_statement),
    so a trigger's body, whose statements end in ";" too, stays whole."""
    out: list[str] = []
    current = ""
    for part in script.split(";"):
        current += part + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n;"):
                out.append(current.strip())
            current = ""
    if current.strip(" \n;"):
        out.append(current.strip().rstrip(";"))
    return out


async def schema_version(conn: Any) -> int:
    if not await conn.execute_fetchall("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"):
        return 0
    rows = list(await conn.execute_fetchall("SELECT version FROM schema_version"))
    return rows[0][0] if rows else 0


async def _repair_first_search_index(conn: Any, current: int) -> None:
    """Migration 9 as main first had it (2026-12-02 02:34 to 03:33) kept the search index by triggers that
    wrote it directly, with no `messages_fts_pending`; it was then changed in place to the batched index
    of today. A home that ran the first one is at version 9 to 16 without that table, and migration 17,
    which uses it, failed there: the home opened with neither version. It is given today's version 9's
    table and triggers, in a transaction of its own: the index it holds has every message, as today's has
    with none pending, and migration 17 makes it again anyway."""
    if not 9 <= current < 17:
        return
    if await conn.execute_fetchall("SELECT 1 FROM sqlite_master WHERE type='table' AND name='messages_fts_pending'"):
        return
    await conn.execute("BEGIN IMMEDIATE")
    try:
        for name in ("insert", "delete", "update"):
            await conn.execute(f"DROP TRIGGER IF EXISTS messages_fts_{name}")
        for stmt in statements(MIGRATIONS[8]):
            if stmt.startswith(("CREATE TABLE messages_fts_pending", "CREATE TRIGGER messages_fts_")):
                await conn.execute(stmt)
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise


async def migrate(conn: Any, upto: int | None = None, *, each: bool = False) -> None:
    """Bring the schema up to date in place, one migration per transaction; a new database (`each`: not so, one
    migration after another as for any other) at once, made as they make it (create_fresh)."""
    target = SCHEMA_VERSION if upto is None else upto
    current = await schema_version(conn)
    if current > SCHEMA_VERSION:
        raise NewerSchema(current)
    fresh = current == 0 and target == freshschema.VERSION == SCHEMA_VERSION and not each
    if fresh and not await conn.execute_fetchall("SELECT 1 FROM sqlite_master LIMIT 1"):  # (not empty: migrated, fails)
        await create_fresh(conn)
        return
    await _repair_first_search_index(conn, current)
    for version in range(current + 1, target + 1):
        await conn.execute("BEGIN IMMEDIATE")
        try:
            if version == 1:
                await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                await conn.execute("INSERT INTO schema_version VALUES (0)")
            for stmt in statements(MIGRATIONS[version - 1]):
                await conn.execute(stmt)
            await conn.execute("UPDATE schema_version SET version=?", (version,))
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise


async def create_fresh(conn: Any) -> None:
    """An empty database made what migrations 1 to SCHEMA_VERSION make of it, in one transaction: a kill before
    its commit leaves the database empty (its WAL's frames uncommitted), and the next open makes it whole."""
    await conn.execute("BEGIN IMMEDIATE")
    try:
        for sql in freshschema.SCHEMA:
            await conn.execute(sql)
        for sql, row in freshschema.ROWS:
            await conn.execute(sql, row)
        for name, value in freshschema.PRAGMAS:
            await conn.execute(f"PRAGMA {name}={int(value)}")
        crash_at("schema:fresh")  # (tests: killed with the schema written, not committed)
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
