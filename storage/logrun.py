"""Bulk reads of one device's log: a run of operations column by column (LogRun) for a push or an
export, in one statement per run. These use plain `sqlite3` connections of their own (the Database's
bulk-read thread, or a RunReader in a push's worker thread), so that a long read never queues in front of
the API's reads."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from bisect import bisect_left

from .connections import Connections
from .model import LogRun, Op, text_head
from .sqliteconns import open_reader

# created_at in whole milliseconds, rounded as Python's round(created_at * 1000) does (to nearest, ties to
# even; SQLite's round() takes ties away from zero). For 0 <= created_at <= 4.5e12 (x = created_at * 1000
# below 2^52, where x + 0.5 is exact): c = x + 0.5 truncated rounds half up, and a tie (c = x + 0.5) with an
# odd c is taken down to even. Any other time (before 1970, or past the year 144,000) comes out as null,
# and the run's times are then read again as floats and rounded in Python. x is computed three times, not
# up to eight as in a CASE over x's truncation and fraction: 3-4% less CPU for the whole statement
# (bench/results/profile-push.md). Only for messages stored without it (created_ms, schema migration 10:
# those written before it, or by another device): reading this device's appends' own is a fifth less CPU
# for the whole statement on chat-sized messages.
_X = "created_at * 1000.0"
_C = f"CAST({_X} + 0.5 AS INTEGER)"
_MS = f"CASE WHEN created_at BETWEEN 0 AND 4.5e12 THEN {_C} - ({_C} = {_X} + 0.5 AND {_C} & 1) ELSE 'null' END"
# The contents as the CBOR text items a page stores: each one's head (its length in UTF-8 bytes, in the
# shortest form) is the separator group_concat puts before it, so that SQLite writes the contents column
# with the GIL released, and Python makes no object per message. The first item's head is not written
# (group_concat puts no separator before its first value): read_run puts it on.
_N = "length(CAST(content AS BLOB))"
_B = "X'" + bytes(range(256)).hex() + "'"  # substr(_B, k + 1, 1) is the byte k


def _byte(expr: str) -> str:
    return f"substr({_B}, ({expr}) + 1, 1)"


# The length is an expression SQLite evaluates again at each use: the tests are ordered so that a head of 3
# bytes (a content of 256 bytes to 64 KiB: most of a chat's) takes two of them, not three, and one of 2
# bytes no more than before (10% less CPU for the statement on chat-sized messages). Only for messages
# stored without their head (content_head, schema migration 10: those written before it, or by another
# device): this device's appends store it, and reading it is 30% less CPU for the whole statement on
# chat-sized messages than working it out (bench/results/profile-push.md).
_HEAD = (
    f"CASE WHEN {_N} >= 256 THEN CASE WHEN {_N} < 65536 THEN X'79' || {_byte(f'{_N} >> 8')} || {_byte(f'{_N} & 255')}"
    f" ELSE X'7a' || {_byte(f'{_N} >> 24')} || {_byte(f'({_N} >> 16) & 255')} || {_byte(f'({_N} >> 8) & 255')}"
    f" || {_byte(f'{_N} & 255')} END"
    f" WHEN {_N} >= 24 THEN X'78' || {_byte(_N)} ELSE char(96 + {_N}) END"
)
_WHERE = " FROM messages WHERE session_id=? AND device_id=? AND seq>? AND seq<=?"
# Not the seqs themselves: a log's seqs are consecutive, so those of the messages are known from their
# first, last and count, and the other operations' seqs (the ops table); read only when they are not
# (_SEQS_SQL). The columns come in seq order: the statement walks the messages_origin index
# (tests/test_push_read.py checks the plan). The chat is most often one throughout: its least and
# greatest say so, and the column is read by a statement of its own only when they differ. Tokens and
# extra fields are mostly all null or (tokens) all set: counted, and listed in full (_COLUMN_SQL) only
# when some are null and some not. The lamports are most often the seqs plus one constant (a device's
# own operations each take the next Lamport value, and nothing else moved its clock in between): the
# least and greatest of lamport - seq say so, and the lamports are then made from the seqs in Python
# (~10 ns apiece, where json.loads of the joined column took ~45, with the GIL held); else they are
# read by a statement of their own (_LAMS_SQL).
_RUN_SQL = (
    "SELECT min(seq), max(seq), count(*), min(lamport - seq), max(lamport - seq),"
    f" group_concat(coalesce(created_ms, {_MS})),"
    " min(chat_id), max(chat_id), json_group_array(role), count(tokens), group_concat(tokens),"
    f" count(extra), group_concat({_N}),"
    f" CAST(group_concat(content, coalesce(content_head, {_HEAD})) AS BLOB)" + _WHERE
)
_SEQS_SQL = "SELECT group_concat(seq)" + _WHERE
_LAMS_SQL = "SELECT group_concat(lamport)" + _WHERE
_COLUMN_SQL = "SELECT json_group_array({})" + _WHERE
_OPS_SQL = "SELECT seq, lamport, kind, body, created_at" + _WHERE.replace("messages", "ops")


def read_run(conn: sqlite3.Connection, sid: str, device_id: str, after: int, upto: int) -> LogRun:
    """Operations after+1..upto of one device's log (LogRun), read by a few statements on one snapshot
    of the database (a read transaction, unless the caller has one open)."""
    if conn.in_transaction:
        return _read_run(conn, sid, device_id, after, upto)
    conn.execute("BEGIN")
    try:
        return _read_run(conn, sid, device_id, after, upto)
    finally:
        conn.execute("COMMIT")


def _read_run(conn: sqlite3.Connection, sid: str, device_id: str, after: int, upto: int) -> LogRun:
    cur = conn.cursor()
    cur.row_factory = None
    args = (sid, device_id, after, upto)
    try:
        row = cur.execute(_RUN_SQL, args).fetchone()
        lo, hi, n, lam_lo, lam_hi, times, chat, last_chat, roles, n_toks, toks, n_extras, sizes, blob = row
    except sqlite3.DataError as exc:
        # More than SQLite's largest value (1 GB) of contents in the range: only messages of
        # megabytes get there. Read it in halves (a run joins halves without copying contents).
        lo, hi = cur.execute("SELECT min(seq), max(seq)" + _WHERE, args).fetchone()
        if getattr(exc, "sqlite_errorcode", None) != 18 or lo is None or lo == hi:  # 18: SQLITE_TOOBIG
            raise
        mid = (lo + hi) // 2
        return _read_run(conn, sid, device_id, after, mid) + _read_run(conn, sid, device_id, mid, upto)
    other = cur.execute(_OPS_SQL, args).fetchall()
    ordered = True
    if not n:
        run = LogRun.empty()
    else:
        # each column one json.loads, in C (a quarter quicker than splitting and converting in Python):
        # the numbers are written by SQLite, so each list is valid JSON once bracketed
        loads = json.loads
        consecutive = hi - lo + 1 == n and not any(lo < row[0] < hi for row in other)
        if consecutive:
            seqs = list(range(lo, hi + 1))  # no gap: the other operations come before or after them all
        else:
            seqs = loads(f"[{cur.execute(_SEQS_SQL, args).fetchone()[0]}]")
            ordered = seqs == sorted(seqs)
        sizes = loads(f"[{sizes}]")
        ms = _one_value(times, n) or loads(f"[{times}]")
        if None in ms:  # a time beyond what the statement rounds exactly: all of them in Python
            created = dict(cur.execute("SELECT seq, created_at" + _WHERE, args).fetchall())
            ms = [round(created[s] * 1000) for s in seqs]
        if chat == last_chat:
            chats = [chat] * n
        else:
            chats = loads(cur.execute(_COLUMN_SQL.format("chat_id"), args).fetchone()[0])
        # the first item's head and the rest as two pieces, not joined (a copy of the ~2 MB a long push
        # reads per chunk fewer, with the GIL held): a page's contents are views of them (LogRun.of_pieces)
        run = LogRun.of_pieces(
            [
                seqs,
                _lamports(cur, args, seqs, consecutive, lam_lo, lam_hi),
                ["message.add"] * n,
                [None] * n,
                ms,
                chats,
                loads(roles),
                _sparse(cur, args, "tokens", n, n_toks, toks),
                _sparse(cur, args, "extra", n, n_extras, None),
                sizes,
            ],
            [text_head(sizes[0]), blob or b""],
        )
        run._consecutive = consecutive or None
    if not ordered:  # the index gives seq order; should SQLite ever not, sort (contents too)
        order = sorted(range(len(run)), key=run.seqs.__getitem__)
        offs = run.offsets()
        run = LogRun(  # type: ignore[call-arg]  # mypy cannot count the ten columns a generator unpacks
            *(list(map(c.__getitem__, order)) for c in run._columns()),  # type: ignore[arg-type]
            b"".join([run.blob[offs[i] : offs[i + 1]] for i in order]),
        )
    if other:
        run = _merge(run, other)
    return run


def _lamports(cur: sqlite3.Cursor, args: tuple, seqs: list[int], consecutive: bool, low: int, high: int) -> list:
    """The messages' lamports, given their seqs (in the statements' order; `consecutive`: lo..hi) and the
    least and greatest of lamport - seq: each seq plus that constant when it is one (no number parsed),
    else read in full."""
    if low != high:
        return json.loads(f"[{cur.execute(_LAMS_SQL, args).fetchone()[0]}]")
    if consecutive:
        return list(range(seqs[0] + low, seqs[-1] + low + 1))
    return [s + low for s in seqs]


def _one_value(joined: str, n: int) -> list | None:
    """A column of n numbers joined by SQLite, as [v] * n if it is one value v throughout, else None. The
    times of a run often are: an append of many messages (an import, 5,000 at a time; a client's batch)
    gives them all one time. Found by comparing strings (in C, a few microseconds for thousands), where
    json.loads would make a number of each (~60 ns apiece)."""
    first = joined.partition(",")[0]
    if len(joined) != n * (len(first) + 1) - 1 or (first + ",") * (n - 1) + first != joined:
        return None
    return [json.loads(first)] * n


def _sparse(cur: sqlite3.Cursor, args: tuple, column: str, n: int, count: int, joined: str | None) -> list:
    """A column of n values of which `count` are not null: all null, all of them as `joined` (numbers
    joined by SQLite), or else read in full by a statement of its own."""
    if not count:
        return [None] * n
    if count == n and joined is not None:
        with contextlib.suppress(ValueError):  # not all numbers (a text in a tokens column): in full
            return json.loads(f"[{joined}]")
    return json.loads(cur.execute(_COLUMN_SQL.format(column), args).fetchone()[0])


def _merge(run: LogRun, other: list) -> LogRun:
    """`run` (messages, in seq order) with the other operations `other` (rows of the ops table) put in
    their places by seq: each column copied once in slices between them, not sorted again (a session
    has a few such operations among thousands of messages)."""
    other = sorted(other)
    at = [bisect_left(run.seqs, row[0]) for row in other]
    n = len(other)
    seqs, lams, kinds, bodies, created = map(list, zip(*other))
    ms = [round(c * 1000) for c in created]
    nones: list = [None] * n
    inserted: tuple[list, ...] = (seqs, lams, kinds, bodies, ms, nones, nones, nones, nones, [-1] * n)
    cols = []
    for col, ins in zip(run._columns(), inserted):
        out: list = []
        prev = 0
        for i, v in zip(at, ins):
            out += col[prev:i]
            out.append(v)
            prev = i
        out += col[prev:]
        cols.append(out)
    return LogRun(*cols, run.blob)  # type: ignore[call-arg, arg-type]  # mypy cannot count the ten columns a list unpacks


class RunReader:
    """A read-only connection of its own, for a push's worker threads: each reads its chunks of a long
    run beside the others (Database.run_reader). Use it from one thread at a time; close it after."""

    def __init__(self, path: str):
        self._conn = open_reader(path)

    def log_run(self, sid: str, device_id: str, after_seq: int, upto_seq: int) -> LogRun:
        """As Database.log_run, in the calling thread."""
        return read_run(self._conn, sid, device_id, after_seq, upto_seq)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RunReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LogReads:
    """One device's log of a session as the sync engine reads it: as operations (log_ops), as a run in
    the bulk-read thread (log_run), or through a connection of the caller's own (run_reader)."""

    def __init__(self, c: Connections):
        self.c = c

    async def log_ops(self, sid: str, device_id: str, after_seq: int, upto_seq: int | None = None) -> list[Op]:
        """This (session, device) log's operations with after_seq < seq <= upto_seq, in seq order."""
        hi = upto_seq if upto_seq is not None else (1 << 62)
        q = self.c.committed
        ops = [
            Op(sid, device_id, r["seq"], r["lamport"], r["kind"], json.loads(r["body"]), r["created_at"])
            for r in await q.fetchall(
                "SELECT seq, lamport, kind, body, created_at FROM ops WHERE session_id=?"
                " AND device_id=? AND seq>? AND seq<=? ORDER BY seq",
                (sid, device_id, after_seq, hi),
            )
        ]
        for r in await q.fetchall(
            "SELECT * FROM messages WHERE session_id=? AND device_id=? AND seq>? AND seq<=? ORDER BY seq",
            (sid, device_id, after_seq, hi),
        ):
            body = {"chat": r["chat_id"], "role": r["role"], "content": r["content"]}
            if r["tokens"] is not None:
                body["tokens"] = r["tokens"]
            if r["extra"]:
                body["extra"] = json.loads(r["extra"])
            ops.append(Op(sid, device_id, r["seq"], r["lamport"], "message.add", body, r["created_at"]))
        ops.sort(key=lambda o: o.seq)
        return ops

    async def log_run(self, sid: str, device_id: str, after_seq: int, upto_seq: int | None = None) -> LogRun:
        """This log's operations after_seq+1..upto_seq, column by column (see LogRun), in seq order: the
        push's hot path, read in one statement in the bulk-read thread."""
        hi = upto_seq if upto_seq is not None else (1 << 62)
        return await self.c.bulk(read_run, sid, device_id, after_seq, hi)

    def run_reader(self) -> RunReader:
        """A read-only connection of its own, for reading long runs from a worker thread."""
        self.c.refuse_by_name()
        return RunReader(self.c.path)
