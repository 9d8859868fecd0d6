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

from sessiond.storage.database import Database
from sessiond.storage.search import PURGE_PAGES, purge_chunk


def optimize_floor(path: str) -> float:
    """The floor: SQLite merging the same index whole in one statement (FTS5 'optimize'), on a copy of the
    database as the delete left it; seconds."""
    copy = path + ".floor"
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    dst = sqlite3.connect(copy, isolation_level=None)
    try:
        src.backup(dst)
        t = time.perf_counter()
        dst.execute("INSERT INTO messages_fts(messages_fts) VALUES ('optimize')")
        return time.perf_counter() - t
    finally:
        src.close()
        dst.close()
        os.remove(copy)


async def measure(path: str, sid: str) -> dict:
    db = await Database.open(path)
    try:
        t = time.perf_counter()
        await db.searcher.catch_up()
        index_s = time.perf_counter() - t
        t = time.perf_counter()
        await db.delete_session(sid)
        delete_ms = (time.perf_counter() - t) * 1000
        assert await db.searcher.purge_wanted()
        floor_s = optimize_floor(path)
        chunks = []
        t0 = time.perf_counter()
        while True:  # Search.purge, each transaction timed
            t = time.perf_counter()
            more = await db.c.write_off_loop(purge_chunk)
            chunks.append((time.perf_counter() - t) * 1000)
            if not more:
                break
            await asyncio.sleep(0)
        purge_s = time.perf_counter() - t0
        t = time.perf_counter()
        scrubs = db.c.wal_scrubs
        db.c.scrub_soon()
        deadline = time.monotonic() + 60
        while db.c.wal_scrubs == scrubs and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        truncate_ms = (time.perf_counter() - t) * 1000
        locked_ms = db.c.checkpoint_locked_ms
        wal = os.path.getsize(path + "-wal")
        return {
            "index_seconds": round(index_s, 2),
            "delete_ms": round(delete_ms, 1),
            "purge_seconds": round(purge_s, 2),
            "floor_optimize_seconds": round(floor_s, 2),  # SQLite's merge of the same index in one statement
            "purge_transactions": len(chunks),
            "purge_pages_per_transaction": PURGE_PAGES,
            "purge_transaction_ms": {
                "p50": round(statistics.median(chunks), 2),
                "p99": round(pct(chunks, 99), 2),
                "max": round(max(chunks), 2),
            },
            "wal_truncate_ms": round(truncate_ms, 1),  # from the request to its end, retries included
            "wal_truncate_writer_held_ms": round(locked_ms, 1),  # what appends wait for
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
