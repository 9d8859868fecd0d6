"""Full-text search over every message on this device: the FTS5 index `messages_fts` (schema migration 9;
since 17 of two columns: the content, and the tool calls' names and arguments, `tool_text`), which takes
every message written (triggers list them as pending, whatever writes them) in batches
before each search and a few times a second, ranked by bm25, each hit with a
snippet of its text and where the matches are in it. The index is local: nothing of it is pushed. A
delete's words leave it too: the background indexer merges it whole after one (Search.purge).

A search is two reads of committed state (the read rule, rule 1): the ranking, which touches only rowids,
then the snippets, columns and compaction state of the few hits it kept (a snippet costs far more than a
rank, and SQLite would otherwise make one for every match before sorting). A hit deleted between the two
is left out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from typing import Any

from .connections import Connections
from .errors import BadQuery, DatabaseLost
from .groupcommit import Transaction
from .model import MESSAGE_COLUMNS, PUSHED_COLUMNS, message_id, no_user_sql, pushed_form

# Marks snippet() puts around each match (Unicode private-use characters, which chat text hardly holds);
# taken out again into `highlights`, offsets into the snippet's text.
log = logging.getLogger("sessiond.storage")
_OPEN, _CLOSE = "\ue000", "\ue001"
ELLIPSIS = "…"
SNIPPET_TOKENS = 16  # the most tokens of a message a snippet shows
MAX_LIMIT = 1000
TOKENIZER = "unicode61 remove_diacritics 2"  # as schema migration 9 makes the index


# Rows per INSERT statement: SQLite takes 32,766 parameters per statement from 3.32 on, 999 before.
MAX_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
ROWS_PER_INSERT = min(1000, MAX_VARIABLES // 10)  # of MESSAGE_COLUMNS; fewer of PUSHED_COLUMNS before 3.32


async def insert_messages(tx: Transaction, rows: list[tuple], *, or_ignore: bool = False, pushed: bool = False) -> int:
    """Insert message rows (MESSAGE_COLUMNS, in order) as few multi-row statements; returns how many went in
    (each statement fires the triggers once per row, but is parsed and stepped once: measured faster than
    executemany for a large batch). `pushed`: with the values a push reads (model.pushed_form; this
    device's appends, which it pushes: schema migration 10)."""
    cols, marks = (
        (PUSHED_COLUMNS, "(?,?,?,?,?,?,?,?,?,?,?,?)") if pushed else (MESSAGE_COLUMNS, "(?,?,?,?,?,?,?,?,?,?)")
    )
    head = f"INSERT {'OR IGNORE ' if or_ignore else ''}INTO messages({cols}) VALUES "
    n = 0
    step = min(ROWS_PER_INSERT, MAX_VARIABLES // marks.count("?"))
    for i in range(0, len(rows), step):
        part = rows[i : i + step]
        if pushed:
            part = [(*r, *pushed_form(r[6], r[8])) for r in part]
        n += await tx.execute(head + ",".join([marks] * len(part)), tuple(x for r in part for x in r))
    return n


def query_error(exc: sqlite3.OperationalError, q: str) -> BadQuery | None:
    """The 400 bad_query for a malformed FTS5 query, or None when `exc` is some other failure (a busy or broken
    database). Told apart by running `q` against an empty in-memory table of the same columns and
    tokenizer: what fails there is the query's fault, whatever words SQLite has for it."""
    probe = sqlite3.connect(":memory:")
    try:
        probe.execute(f"CREATE VIRTUAL TABLE messages_fts USING fts5(content, tool_text, tokenize='{TOKENIZER}')")
        probe.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? ORDER BY rank", (q,)).fetchall()
    except sqlite3.OperationalError as bad:
        return BadQuery(
            f"search query {q!r:.200} is not valid FTS5 syntax ({bad}): write a phrase in double quotes "
            '("like this"), a prefix with a trailing * (lik*), and AND, OR, NOT in capitals between words; '
            "put a word with punctuation (a:b, x-y) in double quotes"
        )
    finally:
        probe.close()
    return None


def highlighted(marked: str) -> tuple[str, list[list[int]]]:
    """A snippet with its match marks taken out: its text, and [start, end) offsets of each match."""
    out: list[str] = []
    spans: list[list[int]] = []
    pos = 0
    start = None
    for ch in marked:
        if ch == _OPEN:
            start = pos
        elif ch == _CLOSE:
            if start is not None:
                spans.append([start, pos])
            start = None
        else:
            out.append(ch)
            pos += 1
    return "".join(out), spans


def is_compacted(compacted: str | None, role: str, lamport: int, device: str, seq: int) -> bool:
    """Whether the chat's compaction has set this message aside (it stays in the history; system
    messages always stay in the context), as storage/context.py's `active` decides it."""
    if not compacted or role == "system":
        return False
    cut = json.loads(compacted)
    return cut is not None and (lamport, device, seq) <= (cut[0], cut[1], cut[2])


# The index takes pending messages in transactions of this many before a search (each a few ms on the
# event loop), and of BACKGROUND_CHUNK a few times a second in the background: FTS5 takes ~5-10 us of the
# loop per message, so 2,000 at once held every append that came meanwhile for ~10 ms, and a quarter
# second of a single client's appends (~340) for ~2 ms, about 1% of the time: the p99 of an append.
# 64 holds one for ~0.4 ms at most, for ~5 us more CPU per message (more, smaller FTS5 segments).
INDEX_CHUNK = 2000
BACKGROUND_CHUNK = 64
INDEX_RETRY_MAX = 60.0  # seconds: the longest wait between the indexer's tries while it fails
INDEX_EVERY = 0.25


INDEX_SQL = (
    "INSERT INTO messages_fts(rowid, content, tool_text) SELECT m.rowid, m.content, m.tool_text FROM messages m"
    " WHERE m.rowid IN (SELECT id FROM messages_fts_pending ORDER BY id LIMIT ?)"
)
UNPEND_SQL = "DELETE FROM messages_fts_pending WHERE id IN (SELECT id FROM messages_fts_pending ORDER BY id LIMIT ?)"


# A delete leaves the deleted messages' words in the index's older segments (an external-content FTS5
# index takes a message out by adding a delete marker) until those are merged: the whole index is merged
# then (schema migration 13), PURGE_PAGES pages at a time, each chunk a transaction on the writer's
# thread, so appends wait for one chunk at most: measured on a 100,000-message index (bench/delete.py),
# ~150-320 chunks of ~2-3 ms (32 pages: ~4.6 ms), 1.25 s in all at half the writer's time. A negative
# 'merge' puts every segment on one level and merges them down to one, dropping the markers and what they
# delete (SQLite's FTS5 'merge' command).
PURGE_PAGES = 16
# ...once no delete came for this long: the deletes of one clean-up (or of a script's loop) share one
# merge of the whole index instead of making one each.
PURGE_QUIET_S = 1.0
PURGE_LATEST_S = 30.0  # ...or once it has waited this long, if deletes never stop for PURGE_QUIET_S
# Set by the transaction of a delete that takes out indexed messages, before its rows go (a session
# whose messages are all still pending, or that has none, leaves nothing in the index to merge away).
PURGE_IF_INDEXED = (
    "INSERT OR IGNORE INTO search_purge(id) SELECT 1 WHERE EXISTS (SELECT 1 FROM messages m WHERE m.session_id=?"
    " AND NOT EXISTS (SELECT 1 FROM messages_fts_pending p WHERE p.id=m.rowid))"
)


def purge_chunk(conn: sqlite3.Connection) -> bool:
    """One chunk of the merge that takes deleted messages' words out of the index (in a transaction the
    caller holds); False once there was nothing left to merge, which clears the purge in that same
    transaction, so a delete committed before it was merged too, and one after it sets it again."""
    before = conn.total_changes
    conn.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('merge', ?)", (-PURGE_PAGES,))
    if conn.total_changes - before >= 2:  # (SQLite's documented sign that the 'merge' did some work)
        return True
    conn.execute("DELETE FROM search_purge")
    return False


def _index_chunk(conn: sqlite3.Connection, chunk: int) -> int:
    """One chunk of the pending messages into the index (in a transaction the caller holds); how many."""
    conn.execute(INDEX_SQL, (chunk,))
    return conn.execute(UNPEND_SQL, (chunk,)).rowcount


class Search:
    def __init__(self, c: Connections):
        self.c = c
        self.indexer_wait = INDEX_EVERY  # seconds before the background indexer's next try (run_indexer)
        self.purges = 0  # whole-index merges done after deletes (Search.purge; tests and benches read it)
        self._purge_seen: float | None = None  # when the indexer first saw a purge wanted and waited

    async def catch_up(self, chunk: int = INDEX_CHUNK, *, off_loop: bool = False) -> int:
        """Index the messages written since the index last caught up (the triggers' pending list), a
        transaction per `chunk`; returns how many. Multi-row statements: FTS5 writes one segment each.
        Writes waiting for the writer go in between two chunks (its lock is first come, first served).
        off_loop (the background indexer): each chunk's statements run on the writer's own thread
        (Connections.write_off_loop), where SQLite tokenizes and merges with the GIL released, so the loop
        is not held for them: an append that comes meanwhile is read and checked while the chunk ends."""
        done = 0
        while True:
            if off_loop:
                n = await self.c.write_off_loop(lambda conn: _index_chunk(conn, chunk))
            else:
                async with self.c.transaction() as tx:
                    await tx.execute(INDEX_SQL, (chunk,))
                    n = await tx.execute(UNPEND_SQL, (chunk,))
            done += n
            if n < chunk:
                return done
            await asyncio.sleep(0)  # other requests in between chunks

    async def pending(self) -> bool:
        return await self.c.committed.fetchone("SELECT 1 FROM messages_fts_pending LIMIT 1") is not None

    async def purge_wanted(self) -> bool:
        return await self.c.committed.fetchone("SELECT 1 FROM search_purge") is not None

    async def _purge_due(self) -> bool:
        """Whether the indexer merges the index now: a purge is wanted, and deletes stopped coming for
        PURGE_QUIET_S, or it has waited PURGE_LATEST_S since this indexer first saw it wanted."""
        t = time.monotonic()
        quiet = t - self.c.deleted_at >= PURGE_QUIET_S
        overdue = self._purge_seen is not None and t - self._purge_seen >= PURGE_LATEST_S
        if quiet or overdue:
            return await self.purge_wanted()
        if self._purge_seen is None and await self.purge_wanted():
            self._purge_seen = t
        return False

    async def purge(self) -> int:
        """Merge the whole index until deleted messages leave no word in it (PURGE_IF_INDEXED), a chunk
        per transaction on the writer's thread, other writes in between; then the WAL is truncated, as
        after the delete (its old frames hold the segments merged away). Returns the chunks that merged."""
        chunks = 0
        while True:
            t = time.perf_counter()
            if not await self.c.write_off_loop(purge_chunk):
                break
            chunks += 1
            # at half the writer's time at most: written flat out, the merge outran the WAL's checkpoints,
            # the WAL grew past the part kept allocated, and a chunk that grew it waited 50-130 ms on the
            # file system (bench/delete.py) where one takes ~3
            await asyncio.sleep(time.perf_counter() - t)
        self.purges += 1
        self._purge_seen = None
        self.c.scrub_soon()
        return chunks

    async def run_indexer(self, every: float = INDEX_EVERY) -> None:
        """The daemon's background task: keeps the index at most `every` seconds behind the messages.
        When it cannot (a full disk), the pending list keeps the messages and it tries again later, the
        wait doubling up to INDEX_RETRY_MAX; the log says so once per spell, and again when it is over."""
        self.indexer_wait, failing = every, None
        while True:
            await asyncio.sleep(self.indexer_wait)
            if self.c.importing:  # an import first: its messages are indexed once it is done
                continue
            try:
                if await self.pending():
                    await self.catch_up(BACKGROUND_CHUNK, off_loop=True)
                if await self._purge_due():
                    await self.purge()
            # a busy or full disk, the database file lost under the daemon (nothing written into it): the pending
            # list keeps them for next time
            except (sqlite3.Error, DatabaseLost) as exc:
                if str(exc) != failing:
                    log.warning("search index: could not catch up (trying again later): %s", exc)
                failing, self.indexer_wait = str(exc), min(INDEX_RETRY_MAX, self.indexer_wait * 2)
                continue
            if failing is not None:
                log.info("search index: caught up again")
            self.indexer_wait, failing = every, None

    async def search(
        self,
        q: str,
        *,
        session: str | None = None,
        user: str | None = None,
        no_user: bool = False,
        role: str | None = None,
        limit: int = 20,
    ) -> list[dict]:
        """The messages matching the FTS5 query `q`, best first (bm25), at most `limit`; filtered by
        session id, the session's user (or `no_user`: the sessions with none) and the message's role. Sessions
        still being imported are left out."""
        if await self.pending():  # every message committed before the search is found by it (off the loop, too)
            await self.catch_up(off_loop=True)
        where = ["messages_fts MATCH ?", "NOT s.importing"]
        args: list[Any] = [q]
        for column, value in (("m.session_id", session), ("s.user", user), ("m.role", role)):
            if value is not None:
                where.append(f"{column}=?")
                args.append(value)
        if no_user:
            where.append(no_user_sql("s"))
        args.append(max(1, min(limit, MAX_LIMIT)))
        try:
            ranked = await self.c.committed.fetchall(
                "SELECT messages_fts.rowid, messages_fts.rank FROM messages_fts"
                " JOIN messages m ON m.rowid=messages_fts.rowid JOIN sessions s ON s.id=m.session_id"
                f" WHERE {' AND '.join(where)} ORDER BY messages_fts.rank LIMIT ?",
                tuple(args),
            )
        except sqlite3.OperationalError as exc:
            err = query_error(exc, q)
            if err is None:
                raise
            raise err from None
        if not ranked:
            return []
        marks = ",".join("?" * len(ranked))
        rows = await self.c.committed.fetchall(
            f"SELECT messages_fts.rowid, snippet(messages_fts, -1, ?, ?, ?, {SNIPPET_TOKENS}),"
            " m.session_id, m.chat_id, m.device_id, m.seq, m.lamport, m.role, m.created_at, c.compacted"
            " FROM messages_fts JOIN messages m ON m.rowid=messages_fts.rowid"
            " LEFT JOIN chats c ON c.session_id=m.session_id AND c.id=m.chat_id"
            f" WHERE messages_fts MATCH ? AND messages_fts.rowid IN ({marks})",
            (_OPEN, _CLOSE, ELLIPSIS, q, *(r[0] for r in ranked)),
        )
        found = {r[0]: r for r in rows}
        hits = []
        for rowid, rank in ranked:
            r = found.get(rowid)
            if r is None:  # deleted since the ranking
                continue
            _, marked, sid, chat, dev, seq, lamport, role_, created, compacted = r
            text, spans = highlighted(marked)
            hits.append(
                {
                    "session": sid,
                    "chat": chat,
                    "id": message_id(dev, seq),
                    "device": dev,
                    "seq": seq,
                    "role": role_,
                    "created_at": created,
                    "snippet": text,
                    "highlights": spans,
                    "rank": rank,
                    "compacted": is_compacted(compacted, role_, lamport, dev, seq),
                }
            )
        return hits
