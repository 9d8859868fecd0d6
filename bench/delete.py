"""What deleting a session costs when the search index is large: the delete itself, then the background
work that takes its words out of the index (storage/search.py, Search.purge: the whole FTS5 index merged
a few pages a transaction) and truncates the WAL (storage/connections.py, scrub_soon). Prints JSON.

The database is bench/search.py's: 100,000 chat-sized messages of a Zipf vocabulary over 100 sessions,
indexed. One session (1,000 messages) is deleted; the purge's transactions are timed one by one, as the
longest of them is the longest an append can wait behind it. The floor: SQLite's FTS5 'optimize' of the
same index (a copy of it) in one statement, no sessiond code.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _util import pct, remove
from search import MESSAGES, SESSIONS, built_home

from sessiond.storage import search
from sessiond.storage.database import Database
from sessiond.storage.search import PURGE_PAGES, purge_chunk


def copy_of(path: str) -> str:
    """A copy of the database as it is now (SQLite's backup), written out to the disk before returning, so
    that its writeback does not compete with what is measured next."""
    copy = path + ".floor"
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    dst = sqlite3.connect(copy, isolation_level=None)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    os.sync()
    return copy


def optimize_floor(copy: str) -> float:
    """The floor: SQLite merging the same index whole in one statement (FTS5 'optimize'), on the copy of
    the database as the delete left it; seconds. The copy is removed."""
    conn = sqlite3.connect(copy, isolation_level=None)
    try:
        t = time.perf_counter()
        conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('optimize')")
        return time.perf_counter() - t
    finally:
        conn.close()
        os.remove(copy)


async def truncated(db: Database) -> tuple[float, float]:
    """Wait for the WAL truncation under way or asked for (Connections.scrub_soon): (ms from now to its
    end, ms it held the writer)."""
    t = time.perf_counter()
    scrubs = db.c.wal_scrubs
    deadline = time.monotonic() + 60
    while db.c.wal_scrubs == scrubs and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    return (time.perf_counter() - t) * 1000, db.c.checkpoint_locked_ms


async def measure(path: str, sid: str) -> dict:
    held: list[float] = []

    def timed_chunk(conn):  # Search.purge's transaction, timed on the writer's thread
        t = time.perf_counter()
        try:
            return purge_chunk(conn)
        finally:
            held.append((time.perf_counter() - t) * 1000)

    search.purge_chunk = timed_chunk
    db = await Database.open(path)
    try:
        t = time.perf_counter()
        await db.searcher.catch_up()
        index_s = time.perf_counter() - t
        # as the daemon does it: the delete, the WAL truncated once deletes stop for SCRUB_QUIET_S, the
        # index purged once they stop for PURGE_QUIET_S (longer), the WAL truncated again after it
        t = time.perf_counter()
        await db.delete_session(sid)
        delete_ms = (time.perf_counter() - t) * 1000
        first_truncate_ms, first_held_ms = await truncated(db)
        assert await db.searcher.purge_wanted()
        copy = copy_of(path)
        t = time.perf_counter()
        await db.searcher.purge()
        purge_s = time.perf_counter() - t
        truncate_ms, held_ms = await truncated(db)
        wal = os.path.getsize(path + "-wal")
        floor_s = optimize_floor(copy)
        return {
            "index_seconds": round(index_s, 2),
            "delete_ms": round(delete_ms, 1),
            "wal_truncate_after_delete_ms": round(first_truncate_ms, 1),  # its quiet wait, retries included
            "wal_truncate_after_delete_writer_held_ms": round(first_held_ms, 1),  # what appends wait for
            "purge_seconds": round(purge_s, 2),  # its pauses included: it takes half the writer at most
            "floor_optimize_seconds": round(floor_s, 2),  # SQLite's merge of the same index in one statement
            "purge_transactions": len(held),
            "purge_pages_per_transaction": PURGE_PAGES,
            "purge_transaction_ms": {
                "p50": round(statistics.median(held), 2),
                "p99": round(pct(held, 99), 2),
                "max": round(max(held), 2),
            },
            "wal_truncate_after_purge_ms": round(truncate_ms, 1),
            "wal_truncate_after_purge_writer_held_ms": round(held_ms, 1),
            "wal_bytes_after": wal,
            "database_mb": round(os.path.getsize(path) / 1e6, 1),
        }
    finally:
        await db.close()


def main() -> None:
    home, path, _, sids, _, _ = built_home()
    out = asyncio.run(measure(path, sids[0]))
    remove(os.path.dirname(home))
    print(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "command": "python bench/delete.py",
                "messages": MESSAGES,
                "sessions": SESSIONS,
                "deleted_messages": MESSAGES // SESSIONS,
                **out,
                "loadavg": [round(x, 2) for x in os.getloadavg()],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
