"""Bulk reads of one device's log: a run of operations column by column (LogRun) for a push or an
export, in one statement per run. These use plain `sqlite3` connections of their own (the Database's
bulk-read thread, or a RunReader in a push's worker thread), so that a long read never queues in front of
the API's reads."""

from __future__ import annotations

import json
import sqlite3
from itertools import accumulate

from .connections import Connections, open_reader
from .model import LogRun, Op

_RUN_SQL = (
    "SELECT group_concat(seq), group_concat(lamport), group_concat(printf('%!.17g', created_at)),"
    " json_group_array(chat_id), json_group_array(role), json_group_array(tokens),"
    " json_group_array(extra), group_concat(length(CAST(content AS BLOB))),"
    " CAST(group_concat(content, '') AS BLOB)"
    " FROM messages WHERE session_id=? AND device_id=? AND seq>? AND seq<=?"
)


def read_run(conn: sqlite3.Connection, sid: str, device_id: str, after: int, upto: int) -> LogRun:
    cur = conn.cursor()
    cur.row_factory = None
    args = (sid, device_id, after, upto)
    try:
        seqs, lams, created, chats, roles, toks, extras, sizes, blob = cur.execute(_RUN_SQL, args).fetchone()
    except sqlite3.DataError as exc:
        # More than SQLite's largest value (1 GB) of contents in the range: only messages of
        # megabytes get there. Read it in halves (a run joins halves without copying contents).
        lo, hi = cur.execute(
            "SELECT min(seq), max(seq) FROM messages WHERE session_id=? AND device_id=? AND seq>? AND seq<=?", args
        ).fetchone()
        if getattr(exc, "sqlite_errorcode", None) != 18 or lo is None or lo == hi:  # 18: SQLITE_TOOBIG
            raise
        mid = (lo + hi) // 2
        return read_run(conn, sid, device_id, after, mid) + read_run(conn, sid, device_id, mid, upto)
    if seqs is None:
        run = LogRun.empty()
    else:
        # each column one json.loads, in C (a quarter quicker than splitting and converting in Python):
        # the numbers are written by SQLite, so each list is valid JSON once bracketed ('%!.17g' always
        # writes a float with a point or an exponent, so created stays float)
        loads = json.loads
        seqs = loads(f"[{seqs}]")
        n = len(seqs)
        run = LogRun(
            seqs,
            loads(f"[{lams}]"),
            ["message.add"] * n,
            [None] * n,
            loads(f"[{created}]"),
            loads(chats),
            loads(roles),
            loads(toks),
            loads(extras),
            loads(f"[{sizes}]"),
            blob,
        )
    if run.seqs != sorted(run.seqs):  # the index gives seq order; should SQLite ever not, sort (contents too)
        order = sorted(range(len(run)), key=run.seqs.__getitem__)
        offs = list(accumulate(run.sizes, initial=0))
        run = LogRun(  # type: ignore[call-arg]  # mypy cannot count the ten columns a generator unpacks
            *(list(map(c.__getitem__, order)) for c in run._columns()),  # type: ignore[arg-type]
            b"".join([run.blob[offs[i] : offs[i + 1]] for i in order]),
        )
    other = cur.execute(
        "SELECT seq, lamport, kind, body, created_at FROM ops WHERE session_id=? AND device_id=? AND seq>? AND seq<=?",
        args,
    ).fetchall()
    if other:  # among the messages in seq order (a stable sort: the contents keep their order)
        n = len(other)
        cols = [a + b for a, b in zip(run._columns(), (*map(list, zip(*other)), *([None] * n,) * 4, [-1] * n))]
        order = sorted(range(len(cols[0])), key=cols[0].__getitem__)
        run = LogRun(*(list(map(c.__getitem__, order)) for c in cols), run.blob)  # type: ignore[call-arg, arg-type]  # mypy cannot count the ten columns a generator unpacks
    return run


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
        return RunReader(self.c.path)
