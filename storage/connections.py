"""The connections to the database file and its write transactions: the machinery under the read rule
stated at the top of storage/database.py.

* the writer: one aiosqlite connection (its own thread) that every write goes through. A write
  transaction spans several awaits, so writers take turns on an asyncio lock (a statement from another
  coroutine would otherwise land inside someone else's transaction);
* the reader: a second aiosqlite connection, read-only, for reads of committed state (`Committed`);
* the bulk thread: a stdlib `sqlite3` connection in a one-thread executor, both owned here (made in
  open, shut in close), for long reads (a push's runs, a checkpoint's chain) that would otherwise queue
  in front of the API's reads on the reader.

Only aiosqlite's public API is used: a read is one `execute_fetchall` (one hop to its thread, and the
statement is finished there, so no read snapshot is ever left open on a connection); a batch insert is
one `executemany`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aiosqlite

from .ids import new_device_id
from .schema import migrate

Row = aiosqlite.Row

# Reads of long runs (a first push, an export) go through the OS page cache without a copy per database
# page: 3x faster on a 200 MB session. Only address space; the kernel may drop it. As large as SQLite
# allows (2 GB), so that a session stored beyond the first few hundred MB of the file reads as fast
# (measured: a 185 MB first push 1.06 s with 256 MB, 0.97 s with this, after 1 GB of other sessions).
MMAP_SIZE = 0x7FFF0000
# Every read-only connection: the database's reader and a push's workers' own (RunReader).
READER_PRAGMAS = ("PRAGMA query_only=1", f"PRAGMA mmap_size={MMAP_SIZE}", "PRAGMA busy_timeout=5000")


def open_reader(path: str) -> sqlite3.Connection:
    """A read-only stdlib connection (autocommit, memory-mapped), usable from any one thread at a time."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        for pragma in READER_PRAGMAS:
            conn.execute(pragma)
    except BaseException:
        conn.close()
        raise
    return conn


class Committed:
    """Reads of committed state, on the read-only connection. Never shows a transaction half done."""

    def __init__(self, conn: aiosqlite.Connection):
        self._conn = conn

    async def fetchall(self, sql: str, args: tuple = ()) -> list[Row]:
        return list(await self._conn.execute_fetchall(sql, args))

    async def fetchone(self, sql: str, args: tuple = ()) -> Row | None:
        rows = list(await self._conn.execute_fetchall(sql, args))
        return rows[0] if rows else None


class Transaction:
    """One write transaction on the writer, held by the coroutine that opened it (Connections.transaction).
    Its reads see its own writes; `emit` queues an event for the listeners, told after the commit."""

    def __init__(self, conn: aiosqlite.Connection):
        self._conn = conn
        self.events: list[dict] = []

    async def fetchall(self, sql: str, args: tuple = ()) -> list[Row]:
        return list(await self._conn.execute_fetchall(sql, args))

    async def fetchone(self, sql: str, args: tuple = ()) -> Row | None:
        rows = list(await self._conn.execute_fetchall(sql, args))
        return rows[0] if rows else None

    async def execute(self, sql: str, args: tuple = ()) -> int:
        """One statement; returns how many rows it changed."""
        return (await self._conn.execute(sql, args)).rowcount

    async def executemany(self, sql: str, rows: Iterable[tuple]) -> int:
        """One statement for many rows, in one hop; returns how many rows it changed in all."""
        return (await self._conn.executemany(sql, rows)).rowcount

    def emit(self, event: dict) -> None:
        self.events.append(event)


class Connections:
    """The writer, the reader and the bulk thread of one database file, and who may use which."""

    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        bulk: sqlite3.Connection,
        device_id: str,
        path: str,
    ):
        self.writer = writer
        self.reader = reader
        self.committed = Committed(reader)
        self._bulk_conn = bulk
        self._bulk = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sessiond-db-bulk")
        self.device_id = device_id
        self.path = path
        self.listeners: list[Callable[[dict], Any]] = []  # told each event after its commit
        self.limits: dict[str, int] = {}  # max_active_sessions(_per_user), max_chats_per_session, ...
        self._lock = asyncio.Lock()
        self.importing: set[str] = set()  # sessions whose import is under way (apply_remote)

    @classmethod
    async def open(cls, path: str, *, upto: int | None = None) -> Connections:
        if not os.path.exists(path):  # create it private from the first byte
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        writer = await aiosqlite.connect(path, isolation_level=None)
        reader = bulk = None
        try:
            writer.row_factory = aiosqlite.Row
            await writer.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed transaction survives a crash of the process (kill -9);
            # only a power loss may lose the very last commits, and never corrupts the database.
            await writer.execute("PRAGMA synchronous=NORMAL")
            await writer.execute("PRAGMA foreign_keys=ON")
            await writer.execute("PRAGMA busy_timeout=5000")
            await migrate(writer, upto)
            if upto is None or upto >= 6:
                # an import a crash cut short (its session hidden, see apply_remote): nothing of it stays,
                # and it can be run again (its rows go with it: ON DELETE CASCADE)
                await writer.execute("DELETE FROM sessions WHERE importing=1")
            # (set-up, before anyone else holds this object: the only reads on the writer outside a
            # transaction)
            rows = list(await writer.execute_fetchall("SELECT value FROM meta WHERE key='device_id'"))
            if rows:
                device_id = rows[0][0]
            else:
                device_id = new_device_id()
                await writer.execute("INSERT INTO meta(key, value) VALUES ('device_id', ?)", (device_id,))
            reader = await aiosqlite.connect(path, isolation_level=None)
            reader.row_factory = aiosqlite.Row
            for pragma in READER_PRAGMAS:
                await reader.execute(pragma)
            bulk = open_reader(path)
        except BaseException:
            for c in (reader, writer):
                if c is not None:
                    await c.close()
            raise
        return cls(writer, reader, bulk, device_id, path)

    async def close(self) -> None:
        self._bulk.shutdown(wait=True)
        self._bulk_conn.close()
        await self.reader.close()
        await self.writer.close()

    # ------------------------------------------------------------------ writes
    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """BEGIN IMMEDIATE ... COMMIT on the writer, in turn with every other write. Rolled back if the
        block raises (or is cancelled); its events go to the listeners after the commit."""
        async with self._lock:
            tx = Transaction(self.writer)
            try:
                await self.writer.execute("BEGIN IMMEDIATE")
                yield tx
                await self.writer.execute("COMMIT")
            except BaseException:
                # Queued behind whatever this transaction still has in the writer's thread (a statement
                # whose await was cancelled still runs), so it always ends the transaction. It is queued
                # as soon as it is called: a second cancellation cannot keep it from running.
                with contextlib.suppress(sqlite3.OperationalError):  # none active (BEGIN failed, or SQLite
                    await self.writer.execute("ROLLBACK")  # rolled back itself)
                raise
        self.emit(tx.events)

    async def write(self, sql: str, args: tuple = ()) -> int:
        """One write statement on its own (autocommit), in turn with the transactions."""
        async with self._lock:
            return (await self.writer.execute(sql, args)).rowcount

    def emit(self, events: Iterable[dict]) -> None:
        for ev in events:
            for fn in list(self.listeners):
                fn(ev)

    # ------------------------------------------------------------------ reads (see the read rule)
    async def latest(self, sql: str, args: tuple = ()) -> list[Row]:
        """The latest committed state, for the sync engine's bookkeeping: on the writer, between
        transactions (under the write lock), so it waits for a transaction under way and sees its end.
        Never call it inside a transaction (the lock is not re-entrant): read through the Transaction."""
        async with self._lock:
            return list(await self.writer.execute_fetchall(sql, args))

    async def bulk(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(connection, *args) in the bulk-read thread, on its own read-only connection."""
        return await asyncio.get_running_loop().run_in_executor(self._bulk, fn, self._bulk_conn, *args)
