"""The stdlib SQLite connections' own pieces under storage/connections.py: the pragmas every connection of the
daemon's database gets, the read-only connection, a write transaction of its own on a thread
(Connections.write_off_loop's), the awaitable wrapper the schema code uses, and the read rule's reader of committed
state (`Committed`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from .dbfile import DatabaseFile
from .groupcommit import GroupCommit

Row = sqlite3.Row
T = TypeVar("T")

# No connection memory-maps the database: a mapped page past the file's end is a SIGBUS, and a shorter file copied
# over sessions.db in place killed the daemon at its next long read (tests/test_database_shrunk.py). Measured without
# the map (bench/push.py, 2026-12-06, the ~180 MB mix too): no loss (bench/results/profile-push.md). Said to every
# connection, not left to the build's default (0 in the stdlib's, not in every SQLite a Python may be built with).
NO_MAP = "PRAGMA mmap_size=0"
# SQLite's temporary files (a SAVEPOINT's sub-journal past 64 KiB, a sort or temporary b-tree that
# spills) kept in memory, on every connection: by default SQLite makes them in /var/tmp, outside the
# home's private folder, with plaintext pages of conversations in them, each a file created and deleted.
# Group commit runs every transaction after a batch's first in a SAVEPOINT (storage/groupcommit.py),
# whose sub-journal (the pages it changed that existed before it: messages, their indexes, the session
# row, the idempotency keys) often passes 64 KiB: under bench/load.py daemon A made ~17 such files a
# second on its event loop's thread, B ~10. (On a file system without a journal, as this machine's,
# every file freed makes later creations dearer for minutes: bench/results/profile-load.md, eighth
# pass; the appends' rate did not measurably change.) What they hold is bounded by the pages one
# transaction changes.
TEMP_IN_MEMORY = "PRAGMA temp_store=MEMORY"
# What is deleted (a session's messages, with `rm` or an expiry) is overwritten with zeros in the database
# file, not left in its free pages for whoever reads the disk later: the default of some SQLite builds
# (Debian's), set here for every build. Its cost is in the pages a delete writes anyway, and in the freed
# pages of a large delete.
SECURE_DELETE = "PRAGMA secure_delete=ON"
# Every read-only connection: the database's reader and a push's workers' own (RunReader).
READER_PRAGMAS = (
    NO_MAP,
    "PRAGMA query_only=1",
    "PRAGMA busy_timeout=5000",
    TEMP_IN_MEMORY,
)


def open_reader(path: str) -> sqlite3.Connection:
    """A read-only stdlib connection (autocommit), usable from any one thread at a time."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        for pragma in READER_PRAGMAS:
            conn.execute(pragma)
    except BaseException:
        conn.close()
        raise
    return conn


def run_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], check: Callable[[], None]) -> T:
    """fn(conn) in one transaction of its own (Connections.write_off_loop's thread); `check` before its COMMIT, as
    the group commit's (raises to roll it back: the database file lost)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
        check()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


class Inline:
    """A stdlib connection behind the awaitable calls the schema code and old tests use
    (`execute`, `execute_fetchall`, `executemany`); each runs at once on the calling thread."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    async def execute(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, tuple(args))

    async def execute_fetchall(self, sql: str, args: Iterable[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, tuple(args)).fetchall()

    async def executemany(self, sql: str, rows: Iterable[tuple]) -> sqlite3.Cursor:
        return self.conn.executemany(sql, rows)

    async def close(self) -> None:
        self.conn.close()


class Committed:
    """Reads of committed state. Never shows a transaction half done, never waits for a writer.

    Served by the writer when it is between transactions (no batch under way, no one holds it, nothing
    open on it): it then sees exactly the committed state, and its page cache survives its own commits,
    while the read-only connection's is discarded by every commit of the writer (WAL mode: another
    connection's write). Measured in-process, a session's row read just after a commit: 52 us on the
    reader, 17 on the writer (bench/results/profile-tail.md); a push's and a checkpoint's first reads come
    right after the append that set them off. Otherwise (a batch is open, or a thread has the writer) on
    the read-only connection, as before."""

    __slots__ = ("_conn", "_file", "_group")

    def __init__(self, conn: sqlite3.Connection, file: DatabaseFile | None = None, group: GroupCommit | None = None):
        self._conn = conn
        self._file = file
        self._group = group

    def _pick(self) -> sqlite3.Connection:
        if self._file is not None and self._file.overwritten:  # (a flag, no stat: set by whichever check saw it)
            raise self._file.read_error()
        if self._group is not None and self._group.idle():
            return self._group.writer
        return self._conn

    async def fetchall(self, sql: str, args: tuple = ()) -> list[Row]:
        return self._pick().execute(sql, args).fetchall()

    async def fetchone(self, sql: str, args: tuple = ()) -> Row | None:
        # fetchall, not fetchone: the statement is finished here, so no read snapshot is left open
        rows = self._pick().execute(sql, args).fetchall()
        return rows[0] if rows else None
