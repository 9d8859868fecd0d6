"""The device's session database: SQLite (WAL, foreign keys) through aiosqlite.

Every change is an *operation* written by one device with a per-(session, device) sequence number and a
per-session Lamport clock. Messages are operations stored in the `messages` table; every other change
(session created, settings changed, chat created, ...) is a row in `ops`. The materialised tables
(`sessions`, `chats`, `messages`) are what the API reads. Operations from other devices are applied
with the same code, and the result does not depend on the order they arrive in:

* fields of a session or chat are last-writer-wins per field, by (lamport, device id); creating a chat
  writes its fields like an update, so one chat id created on two devices at once converges on the
  later creation's fields; an update that arrives before its chat is applied when the chat comes;
* a session's end is final: a pause or resume made concurrently elsewhere does not undo it;
* messages are ordered by (lamport, device id, seq) and de-duplicated by (device id, seq).

A device's own operations with seq above its pushed mark are the durable push queue: they are
written in the same transaction as the change they describe.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import sqlite3
import time
from dataclasses import dataclass
from itertools import accumulate, repeat
from operator import itemgetter
from typing import Any, Iterable

import aiosqlite

from .errors import Conflict, ContextOverflow, IdempotencyKeyReused, Invalid, LimitReached, NotFound, QuotaExceeded
from .ids import check_id, new_device_id, new_id

ROLES = ("system", "user", "assistant", "tool")
STATUSES = ("active", "paused", "ended")
# provider: the name of a [providers.NAME] table in config.toml that answers for the session (issue 16)
SETTINGS_KEYS = ("temperature", "top_k", "top_p", "max_tokens", "provider")
# Session fields a PATCH may change (status changes go through pause/resume/end).
PATCHABLE = ("name", "user", "system_prompt", "model", "settings", "metadata", "tags", "preferences", "policy",
             "expires_at", "initial_messages")
JSON_FIELDS = ("settings", "initial_messages", "metadata", "tags", "preferences", "policy")
# Session policy (issue 5): token_quota, checkpoint_interval, idle_timeout, and the chats' default
# max_context_tokens, context_margin and auto_compact.
POLICY_KEYS = ("token_quota", "checkpoint_interval", "idle_timeout", "max_context_tokens", "context_margin",
               "auto_compact")
CHAT_POLICY_KEYS = ("max_context_tokens", "context_margin", "auto_compact")
# Chat fields a chat.update may change (each last-writer-wins by (lamport, device id)).
CHAT_FIELDS = ("compacted", "policy", "name", "system_prompt", "model", "settings")
# Extra fields of a model's answer (issue 16), kept with the message and synced with it: the model and
# provider that wrote it, the provider's usage {prompt_tokens, completion_tokens}, its response times
# {first_token_ms, total_ms}, and interrupted/error when the answer stopped before its end.
ANSWER_KEYS = ("model", "provider", "usage", "response", "interrupted", "error")
EXTRA_KEYS = ("name", "tool_call_id", "metadata") + ANSWER_KEYS
DEFAULT_CHECKPOINT_INTERVAL = 1000
DEFAULT_CONTEXT_MARGIN = 0.8
WARNING_LEVELS = ((1.0, "exhausted"), (0.9, "critical"), (0.7, "warning"), (0.0, "safe"))

MIGRATIONS: list[str] = [
    # 1: sessions, chats, messages, operations
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user TEXT,
        name TEXT,
        system_prompt TEXT,
        model TEXT,
        settings TEXT NOT NULL DEFAULT '{}',
        initial_messages TEXT NOT NULL DEFAULT '[]',
        metadata TEXT NOT NULL DEFAULT '{}',
        tags TEXT NOT NULL DEFAULT '[]',
        preferences TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'active',
        current_chat TEXT,
        created_at REAL NOT NULL,
        last_activity REAL NOT NULL,
        expires_at REAL,
        lamport INTEGER NOT NULL DEFAULT 0,
        stamps TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX sessions_user ON sessions(user, id);
    CREATE INDEX sessions_status ON sessions(status, id);
    CREATE TABLE chats (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        id TEXT NOT NULL,
        name TEXT,
        system_prompt TEXT,
        model TEXT,
        settings TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        stamps TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (session_id, id)
    ) WITHOUT ROWID;
    CREATE TABLE messages (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        chat_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        lamport INTEGER NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        tokens INTEGER,
        created_at REAL NOT NULL,
        extra TEXT
    );
    CREATE UNIQUE INDEX messages_origin ON messages(session_id, device_id, seq);
    CREATE INDEX messages_order ON messages(session_id, chat_id, lamport, device_id, seq);
    CREATE TABLE ops (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        device_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        lamport INTEGER NOT NULL,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (session_id, device_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE logs (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        device_id TEXT NOT NULL,
        last_seq INTEGER NOT NULL,
        PRIMARY KEY (session_id, device_id)
    ) WITHOUT ROWID;
    """,
    # 2: push state per session (what of this device's log is safely in the store)
    """
    CREATE TABLE sync_state (
        session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        pushed_seq INTEGER NOT NULL DEFAULT 0,
        head_rev INTEGER NOT NULL DEFAULT 0,
        tree BLOB,
        pending BLOB,
        last_error TEXT,
        last_push REAL
    );
    """,
    # 3: sessions shared between devices: where they sync, what this device may do, whom it follows
    """
    ALTER TABLE sessions ADD COLUMN access TEXT NOT NULL DEFAULT 'owner';
    CREATE TABLE remotes (
        session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        store_url TEXT,
        announce_pk BLOB NOT NULL,
        members_rev INTEGER NOT NULL DEFAULT 0,
        announced INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE peers (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        head_pk BLOB NOT NULL,
        device_id TEXT,
        rev INTEGER NOT NULL DEFAULT 0,
        applied_seq INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        PRIMARY KEY (session_id, head_pk)
    ) WITHOUT ROWID;
    """,
    # 4: policies (quotas, context budgets, checkpoints), compaction, provenance, checkpoints
    """
    ALTER TABLE sessions ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE sessions ADD COLUMN tokens_used INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN provenance TEXT;
    ALTER TABLE chats ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE chats ADD COLUMN compacted TEXT;
    CREATE TABLE checkpoints (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        device_id TEXT NOT NULL,
        number INTEGER NOT NULL,
        hash BLOB NOT NULL,
        tokens INTEGER NOT NULL,
        messages INTEGER NOT NULL,
        frontier TEXT NOT NULL,
        created_at REAL NOT NULL,
        pk BLOB NOT NULL,
        signature BLOB NOT NULL,
        PRIMARY KEY (session_id, device_id, number)
    ) WITHOUT ROWID;
    UPDATE sessions SET tokens_used = (SELECT coalesce(sum(tokens), 0) FROM messages WHERE session_id = sessions.id);
    """,
    # 5: idempotency keys of appends (this device only, never synced): a retried append is answered with
    # the first one's result. Written in the append's own transaction, so a crash cannot split them.
    """
    CREATE TABLE idempotency (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        key TEXT NOT NULL,
        request TEXT NOT NULL,
        result TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (session_id, key)
    );
    CREATE INDEX idempotency_age ON idempotency(session_id, created_at);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
# How long, and how many per session, appends' idempotency keys are remembered.
IDEMPOTENCY_TTL = 24 * 3600.0
IDEMPOTENCY_KEEP = 1000


_PLAIN = {"role", "content", "tokens", "chat"}


def now() -> float:
    """Wall-clock time rounded to milliseconds, the precision that travels in snapshots."""
    return round(time.time() * 1000) / 1000


@dataclass
class Op:
    """One operation of one device's log."""

    session_id: str
    device_id: str
    seq: int
    lamport: int
    kind: str
    body: dict
    created_at: float

    @property
    def order(self) -> tuple:
        return (self.lamport, self.device_id, self.seq)


@dataclass
class RemoteLog:
    """Another device's operations as read from its log, ready for apply_remote: its messages as rows
    for one batched insert, (session_id, chat_id, device_id, seq, lamport, role, content, tokens,
    created_at, extra JSON), and its other operations; last_seq is the highest seq read."""

    device_id: str
    messages: list[tuple]
    ops: list[Op]
    last_seq: int

    def __len__(self) -> int:
        return len(self.messages) + len(self.ops)


class LogRun:
    """Operations first..first+n-1 of one device's log, column by column: what a push encodes into
    pages. Message contents are not Python strings: `blob` holds their UTF-8 back to back, and
    `sizes[i]` is operation i's share of it in bytes, or -1 for an operation that is not a message (its
    `bodies[i]` is then its JSON body, and its chat, role, tokens and extra are None). pieces() gives
    each operation's UTF-8 as a view into the blob; runs are cut and joined by their views, so the
    contents are never copied on the way from SQLite to a page."""

    __slots__ = ("seqs", "lams", "kinds", "bodies", "created", "chats", "roles", "toks", "extras", "sizes", "blob",
                 "_pieces")

    def __init__(self, seqs: list, lams: list, kinds: list, bodies: list, created: list, chats: list,
                 roles: list, toks: list, extras: list, sizes: list, blob: bytes, pieces: list | None = None):
        self.seqs, self.lams, self.kinds, self.bodies, self.created = seqs, lams, kinds, bodies, created
        self.chats, self.roles, self.toks, self.extras, self.sizes, self.blob = chats, roles, toks, extras, sizes, blob
        self._pieces = pieces

    def __len__(self) -> int:
        return len(self.seqs)

    def pieces(self) -> list:
        """Operation i's content as UTF-8 (a memoryview; empty for an operation that is not a message)."""
        if self._pieces is None:
            blob, sizes = memoryview(self.blob), self.sizes
            offs = list(accumulate(sizes if -1 not in sizes else map(max, sizes, repeat(0)), initial=0))
            self._pieces = list(map(blob.__getitem__, map(slice, offs[:-1], offs[1:])))
        return self._pieces

    def tail(self, i: int) -> "LogRun":
        """The operations from index i on (their contents still in this run's blob)."""
        return LogRun(*(c[i:] for c in self._columns()), b"", self.pieces()[i:])

    def __add__(self, other: "LogRun") -> "LogRun":
        return LogRun(*(a + b for a, b in zip(self._columns(), other._columns())), b"",
                      self.pieces() + other.pieces())

    def _columns(self) -> tuple:
        return (self.seqs, self.lams, self.kinds, self.bodies, self.created, self.chats, self.roles, self.toks,
                self.extras, self.sizes)

    @classmethod
    def empty(cls) -> "LogRun":
        return cls([], [], [], [], [], [], [], [], [], [], b"")

    @classmethod
    def from_records(cls, records: list[tuple]) -> "LogRun":
        """From tuples (seq, lamport, kind, body JSON, created_at, chat, role, content, tokens, extra
        JSON); content None for an operation that is not a message."""
        if not records:
            return cls.empty()
        seqs, lams, kinds, bodies, created, chats, roles, contents, toks, extras = map(list, zip(*records))
        utf8 = [c.encode() if c is not None else b"" for c in contents]
        sizes = [len(u) if c is not None else -1 for u, c in zip(utf8, contents)]
        return cls(seqs, lams, kinds, bodies, created, chats, roles, toks, extras, sizes, b"".join(utf8))


# One row for a whole run of messages: SQLite concatenates the columns in C, with the GIL released for
# the whole statement, where a row at a time would take and drop the GIL per row (and wait for it
# behind every other thread of a push). 17 significant digits give back every double exactly.
_RUN_SQL = ("SELECT group_concat(seq), group_concat(lamport), group_concat(printf('%!.17g', created_at)),"
            " json_group_array(chat_id), json_group_array(role), json_group_array(tokens),"
            " json_group_array(extra), group_concat(length(CAST(content AS BLOB))),"
            " CAST(group_concat(content, '') AS BLOB)"
            " FROM messages WHERE session_id=? AND device_id=? AND seq>? AND seq<=?")


# Reads of long runs (a first push, an export) go through the OS page cache without a copy per database
# page: 3x faster on a 200 MB session. Only address space; the kernel may drop it. As large as SQLite
# allows (2 GB), so that a session stored beyond the first few hundred MB of the file reads as fast
# (measured: a 185 MB first push 1.06 s with 256 MB, 0.97 s with this, after 1 GB of other sessions).
MMAP_SIZE = 0x7FFF0000
# Every read-only connection: the database's reader and a push's workers' own (RunReader).
_READER_PRAGMAS = ("PRAGMA query_only=1", f"PRAGMA mmap_size={MMAP_SIZE}", "PRAGMA busy_timeout=5000")


def _log_run_sync(conn: sqlite3.Connection, sid: str, device_id: str, after: int, upto: int) -> LogRun:
    cur = conn.cursor()
    cur.row_factory = None
    args = (sid, device_id, after, upto)
    try:
        seqs, lams, created, chats, roles, toks, extras, sizes, blob = cur.execute(_RUN_SQL, args).fetchone()
    except sqlite3.DataError as exc:
        # More than SQLite's largest value (1 GB) of contents in the range: only messages of
        # megabytes get there. Read it in halves (a run joins halves without copying contents).
        lo, hi = cur.execute("SELECT min(seq), max(seq) FROM messages WHERE session_id=? AND device_id=? AND seq>?"
                             " AND seq<=?", args).fetchone()
        if getattr(exc, "sqlite_errorcode", None) != 18 or lo is None or lo == hi:  # 18: SQLITE_TOOBIG
            raise
        mid = (lo + hi) // 2
        return _log_run_sync(conn, sid, device_id, after, mid) + _log_run_sync(conn, sid, device_id, mid, upto)
    if seqs is None:
        run = LogRun.empty()
    else:
        # each column one json.loads, in C (a quarter quicker than splitting and converting in Python):
        # the numbers are written by SQLite, so each list is valid JSON once bracketed ('%!.17g' always
        # writes a float with a point or an exponent, so created stays float)
        loads = json.loads
        seqs = loads(f"[{seqs}]")
        n = len(seqs)
        run = LogRun(seqs, loads(f"[{lams}]"), ["message.add"] * n, [None] * n, loads(f"[{created}]"), loads(chats),
                     loads(roles), loads(toks), loads(extras), loads(f"[{sizes}]"), blob)
    if run.seqs != sorted(run.seqs):  # the index gives seq order; should SQLite ever not, sort (contents too)
        order = sorted(range(len(run)), key=run.seqs.__getitem__)
        offs = list(accumulate(run.sizes, initial=0))
        run = LogRun(*(list(map(c.__getitem__, order)) for c in run._columns()),
                     b"".join([run.blob[offs[i]:offs[i + 1]] for i in order]))
    other = cur.execute("SELECT seq, lamport, kind, body, created_at FROM ops WHERE session_id=? AND device_id=?"
                        " AND seq>? AND seq<=?", args).fetchall()
    if other:  # among the messages in seq order (a stable sort: the contents keep their order)
        n = len(other)
        cols = [a + b for a, b in zip(run._columns(), (*map(list, zip(*other)), *([None] * n,) * 4, [-1] * n))]
        order = sorted(range(len(cols[0])), key=cols[0].__getitem__)
        run = LogRun(*(list(map(c.__getitem__, order)) for c in cols), run.blob)
    return run


class RunReader:
    """A read-only connection of its own, for a push's worker threads: each reads its chunks of a long
    run beside the others (Database.run_reader). Use it from one thread at a time; close it after."""

    def __init__(self, path: str):
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            for pragma in _READER_PRAGMAS:
                self._conn.execute(pragma)
        except BaseException:
            self._conn.close()
            raise

    def log_run(self, sid: str, device_id: str, after_seq: int, upto_seq: int) -> LogRun:
        """As Database.log_run, in the calling thread."""
        return _log_run_sync(self._conn, sid, device_id, after_seq, upto_seq)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "RunReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _query_sync(conn: sqlite3.Connection, sql: str, args: tuple, one: bool) -> Any:
    cur = conn.execute(sql, args)
    try:
        return cur.fetchone() if one else cur.fetchall()
    finally:
        # Never leave a statement open: an unfinished SELECT keeps its connection's read snapshot, and
        # every later read on that connection would see the database as it was then (this showed up
        # under load as a session missing right after it was created, and as torn pushes).
        cur.close()


async def _query(conn: aiosqlite.Connection, sql: str, args: tuple = (), *, one: bool = False) -> Any:
    """Run one query and close its cursor inside the connection's thread, in one hop: nothing that
    holds a statement open (a cursor, or a cancelled await between execute and close) ever leaves it."""
    return await conn._execute(_query_sync, conn._conn, sql, args, one)


def _loads(text: str | None, default: Any) -> Any:
    return default if text is None else json.loads(text)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_INT_LIMITS = (-(1 << 64), (1 << 64) - 1)  # what DAG-CBOR can encode (sync/dagcbor.py)


def _pushable(v: Any) -> tuple[Any, bool]:
    """`v` with what DAG-CBOR cannot encode replaced (an integer beyond 64 bits by its decimal text,
    NaN and Infinity by null), and whether anything was."""
    if isinstance(v, dict):
        out, changed = {}, False
        for k, x in v.items():
            out[k], c = _pushable(x)
            changed |= c
        return out, changed
    if isinstance(v, list):
        pairs = [_pushable(x) for x in v]
        return [x for x, _ in pairs], any(c for _, c in pairs)
    if isinstance(v, float) and not math.isfinite(v):
        return None, True
    if isinstance(v, int) and not isinstance(v, bool) and not _INT_LIMITS[0] <= v <= _INT_LIMITS[1]:
        return str(v), True
    return v, False


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def message_id(device_id: str, seq: int) -> str:
    return f"{device_id}-{seq}"


def parse_message_id(mid: str) -> tuple[str, int]:
    dev, sep, seq = mid.rpartition("-")
    if not sep or not dev or not seq.isdigit():
        raise Invalid(f"not a message id: {mid!r:.80} (expected DEVICE-SEQ, as listed by `sessiond log`)")
    return dev, int(seq)


def _cutoff_id(compacted: str | None) -> str | None:
    if not compacted:
        return None
    lam, dev, seq = json.loads(compacted)
    return message_id(dev, seq)


def charge(m: dict) -> int:
    """What a message costs the session's quota: its tokens, plus, for a model's answer, the prompt
    tokens the provider counted for it (the context sent with the question)."""
    usage = m.get("usage")
    prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return (m.get("tokens") or 0) + (prompt if type(prompt) is int and prompt > 0 else 0)


def _row_charge(tokens: int | None, extra: str | None) -> int:
    if extra and '"usage"' in extra:
        return charge({"tokens": tokens, **json.loads(extra)})
    return tokens or 0


# the session's quota use recounted from its messages (charge() in SQL)
_RECOUNT = ("(SELECT coalesce(sum(tokens), 0) + coalesce(sum(CASE WHEN json_valid(extra) THEN"
            " max(0, coalesce(json_extract(extra, '$.usage.prompt_tokens'), 0)) END), 0)"
            " FROM messages WHERE session_id=?)")


def warning_level(used: int, quota: int | None) -> str:
    if not quota:
        return "safe"
    frac = used / quota
    return next(name for limit, name in WARNING_LEVELS if frac >= limit)


def _stamp_newer(stamp: tuple, old: list | None) -> bool:
    return old is None or tuple(stamp) > tuple(old)


class Database:
    """One connection, used only from the daemon's event loop. Writes are serialised by SQLite."""

    def __init__(self, conn: aiosqlite.Connection, device_id: str, path: str,
                 reader: aiosqlite.Connection | None = None):
        self.conn = conn
        # A second, read-only connection (its own thread) for the sync worker's bulk reads, so that a
        # push never queues in front of an app's append. It sees only committed data.
        self.reader = reader or conn
        self.device_id = device_id
        self.path = path
        self.listeners: list = []  # callables(event: dict) run after each commit
        # One connection serves every coroutine: a write transaction spans several awaits, so writers
        # take turns here (a write from elsewhere would otherwise land inside another's transaction).
        self._write_lock = asyncio.Lock()
        self._tx_owner: asyncio.Task | None = None
        self.limits: dict[str, int] = {}  # max_active_sessions(_per_user), max_chats_per_session, max_messages_per_chat

    # ------------------------------------------------------------------ opening and migrations
    @classmethod
    async def open(cls, path: str, *, upto: int | None = None) -> "Database":
        new = not os.path.exists(path)
        if new:  # create it private from the first byte
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed transaction survives a crash of the process (kill -9);
        # only a power loss may lose the very last commits, and never corrupts the database.
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        await migrate(conn, upto)
        async with conn.execute("SELECT value FROM meta WHERE key='device_id'") as cur:
            row = await cur.fetchone()
        if row is None:
            device_id = new_device_id()
            await conn.execute("INSERT INTO meta(key, value) VALUES ('device_id', ?)", (device_id,))
        else:
            device_id = row[0]
        reader = await aiosqlite.connect(path, isolation_level=None)
        reader.row_factory = aiosqlite.Row
        for pragma in _READER_PRAGMAS:
            await reader.execute(pragma)
        return cls(conn, device_id, path, reader)

    async def repair_unpushable(self) -> list[str]:
        """Make this device's unpushed operations pushable again, and return the sessions changed.

        Before the API held values to what DAG-CBOR can encode, a session could take an integer
        beyond 64 bits (or a NaN) and then fail every push for ever. Such an operation was never
        pushed, so no other device has it, and it may still be rewritten: the integer becomes its
        decimal text, the NaN or Infinity null, in the operation and in what it materialised. The
        session's owner can then replace the value (`sessiond set --metadata ...`)."""
        def work(db: sqlite3.Connection) -> list[str]:
            pushed = "coalesce((SELECT pushed_seq FROM sync_state y WHERE y.session_id=t.session_id), 0)"
            found: dict[str, list] = {}
            for table, col in (("ops", "body"), ("messages", "extra")):
                for sid, seq, text in db.execute(
                        f"SELECT session_id, seq, {col} FROM {table} t WHERE device_id=? AND {col} IS NOT NULL"
                        f" AND seq > {pushed} AND ({col} GLOB '*[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]"
                        f"[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]*' OR {col} GLOB '*NaN*'"
                        f" OR {col} GLOB '*Infinity*')", (self.device_id,)).fetchall():
                    fixed, changed = _pushable(json.loads(text))
                    if changed:
                        found.setdefault(sid, []).append((table, col, seq, _dumps(fixed)))
            if not found:
                return []
            db.execute("BEGIN IMMEDIATE")
            try:
                for sid, fixes in found.items():
                    for table, col, seq, text in fixes:
                        db.execute(f"UPDATE {table} SET {col}=? WHERE session_id=? AND device_id=? AND seq=?",
                                   (text, sid, self.device_id, seq))
                    for table, cols, key in (("sessions", JSON_FIELDS, "id"), ("chats", ("settings", "policy"),
                                                                               "session_id")):
                        for row in db.execute(f"SELECT id, {', '.join(cols)} FROM {table} WHERE {key}=?",
                                              (sid,)).fetchall():
                            for k, text in zip(cols, row[1:]):
                                fixed, changed = _pushable(json.loads(text)) if text else (None, False)
                                if changed:
                                    db.execute(f"UPDATE {table} SET {k}=? WHERE {key}=? AND id=?",
                                               (_dumps(fixed), sid, row[0]))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return sorted(found)

        async with self._write_lock:
            return await self.conn._execute(work, self.conn._conn)

    async def close(self) -> None:
        if self.reader is not self.conn:
            await self.reader.close()
        await self.conn.close()

    async def schema_version(self) -> int:
        return await schema_version(self.conn)

    # ------------------------------------------------------------------ transactions
    async def _begin(self) -> None:
        await self._write_lock.acquire()
        try:
            await self.conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._write_lock.release()
            raise
        self._tx_owner = asyncio.current_task()

    async def _commit(self, events: Iterable[dict] = ()) -> None:
        try:
            await self.conn.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise
        self._tx_owner = None
        self._write_lock.release()
        for ev in events:
            for fn in list(self.listeners):
                fn(ev)

    async def _rollback(self) -> None:
        try:
            if self.conn.in_transaction:
                await self.conn.execute("ROLLBACK")
        finally:
            self._tx_owner = None
            if self._write_lock.locked():
                self._write_lock.release()

    async def _write(self, sql: str, args: tuple = ()) -> None:
        """One write statement outside any transaction (autocommit), in turn with the transactions."""
        async with self._write_lock:
            await self.conn.execute(sql, args)

    def _read_conn(self) -> aiosqlite.Connection:
        """Reads inside this task's own transaction use its connection; every other read uses the
        read-only connection, which sees committed data only (the writer's connection would also show
        another coroutine's transaction half done)."""
        return self.conn if self._tx_owner is not None and self._tx_owner is asyncio.current_task() else self.reader

    async def _fresh(self, sql: str, args: tuple = ()) -> list[aiosqlite.Row]:
        """A read of the latest committed state, for the sync engine's bookkeeping: on the writer's
        connection while no transaction is open on it (the write lock), so that no other task's
        unfinished transaction can show it anything but what is committed now."""
        if self._tx_owner is not None and self._tx_owner is asyncio.current_task():
            return await _query(self.conn, sql, args)
        async with self._write_lock:
            return await _query(self.conn, sql, args)

    async def _one(self, sql: str, args: tuple = ()) -> aiosqlite.Row | None:
        return await _query(self._read_conn(), sql, args, one=True)

    async def _all(self, sql: str, args: tuple = ()) -> list[aiosqlite.Row]:
        return await _query(self._read_conn(), sql, args)

    async def _session_row(self, sid: str) -> aiosqlite.Row:
        row = await self._one("SELECT * FROM sessions WHERE id=?", (sid,))
        if row is None:
            raise NotFound(f"no session {sid!r} on this device (see `sessiond ls`)")
        return row

    async def _writable_row(self, sid: str) -> aiosqlite.Row:
        row = await self._session_row(sid)
        if row["access"] == "read":
            raise Conflict(f"session {sid!r} was imported with a read-only share code; this device can follow it "
                           f"but not change it (ask its owner for a code made with `sessiond share --write`)")
        return row

    async def _next(self, sid: str, lamport: int, n: int = 1) -> tuple[int, int]:
        """Reserve `n` sequence numbers of this device's log and return (first seq, first lamport)."""
        row = await self._one("SELECT last_seq FROM logs WHERE session_id=? AND device_id=?", (sid, self.device_id))
        first = (row[0] if row else 0) + 1
        await self.conn.execute(
            "INSERT INTO logs(session_id, device_id, last_seq) VALUES (?,?,?) "
            "ON CONFLICT(session_id, device_id) DO UPDATE SET last_seq=excluded.last_seq",
            (sid, self.device_id, first + n - 1))
        return first, lamport + 1

    async def _local_op(self, sid: str, lamport: int, kind: str, body: dict, t: float) -> Op:
        seq, lam = await self._next(sid, lamport)
        op = Op(sid, self.device_id, seq, lam, kind, body, t)
        await self.conn.execute(
            "INSERT INTO ops(session_id, device_id, seq, lamport, kind, body, created_at) VALUES (?,?,?,?,?,?,?)",
            (sid, op.device_id, op.seq, op.lamport, kind, _dumps(body), t))
        await self._apply(op)
        return op

    # ------------------------------------------------------------------ applying operations
    async def _apply(self, op: Op) -> None:
        await self.conn._execute(self._apply_sync, self.conn._conn, op)

    def _apply_sync(self, db: sqlite3.Connection, op: Op) -> None:
        """Materialise one non-message operation (in the database thread, inside a transaction).
        Idempotent and order-independent: fields are last-writer-wins by (lamport, device id)."""
        b = op.body
        stamp = [op.lamport, op.device_id]
        if op.kind == "session.create":
            fields = {k: b.get(k) for k in ("user", "name", "system_prompt", "model", "expires_at",
                                             "current_chat")}
            for k in JSON_FIELDS:
                fields[k] = _dumps(b.get(k, [] if k in ("tags", "initial_messages") else {}))
            fields["status"] = "active"
            stamps = {k: stamp for k in fields}
            db.execute(
                "INSERT INTO sessions(id, user, name, system_prompt, model, settings, initial_messages, metadata,"
                " tags, preferences, status, current_chat, created_at, last_activity, expires_at, lamport, stamps,"
                " policy, provenance) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO NOTHING",
                (op.session_id, fields["user"], fields["name"], fields["system_prompt"], fields["model"],
                 fields["settings"], fields["initial_messages"], fields["metadata"], fields["tags"],
                 fields["preferences"], "active", fields["current_chat"], b.get("created_at", op.created_at),
                 op.created_at, fields["expires_at"], op.lamport, _dumps(stamps), fields["policy"],
                 _dumps(b["provenance"]) if b.get("provenance") else None))
            for chat in b.get("chats", []):
                self._apply_sync(db, Op(op.session_id, op.device_id, op.seq, op.lamport, "chat.create", chat,
                                        op.created_at))
        elif op.kind == "session.update":
            row = db.execute("SELECT stamps, status FROM sessions WHERE id=?", (op.session_id,)).fetchone()
            if row is None:
                raise NotFound(f"no session {op.session_id!r} to update")
            stamps = json.loads(row["stamps"])
            current_status = row["status"]
            sets, args = [], []
            for k, v in b.items():
                if k not in PATCHABLE and k not in ("status", "current_chat"):
                    continue  # fields from a newer version are ignored, not fatal
                if k == "status" and "ended" in (v, current_status):
                    # an end is final, as it is locally: a pause or resume made concurrently elsewhere
                    # does not undo it, whichever arrives first (of two ends, the later one's stamp stays)
                    if v == "ended" and (current_status != "ended" or _stamp_newer(stamp, stamps.get(k))):
                        stamps[k], current_status = stamp, "ended"
                        sets.append("status=?")
                        args.append(v)
                    continue
                if _stamp_newer(stamp, stamps.get(k)):
                    stamps[k] = stamp
                    sets.append(f"{k}=?")
                    args.append(_dumps(v) if k in JSON_FIELDS else v)
            if sets:
                sets.append("stamps=?")
                args.append(_dumps(stamps))
                db.execute(f"UPDATE sessions SET {', '.join(sets)} WHERE id=?", (*args, op.session_id))
        elif op.kind == "chat.create":
            # A chat created on two devices at once under one id is one chat: a creation writes each of
            # its fields at its stamp, like an update, so the later creation by (lamport, device) wins
            # them whichever arrives first (and later updates win over both).
            fields = {"name": b.get("name"), "system_prompt": b.get("system_prompt"), "model": b.get("model"),
                      "settings": b.get("settings") or {}, "policy": b.get("policy") or {},
                      "created_at": b.get("created_at", op.created_at)}
            cur = db.execute(
                "INSERT INTO chats(session_id, id, name, system_prompt, model, settings, created_at, stamps, policy)"
                " VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                (op.session_id, b["id"], fields["name"], fields["system_prompt"], fields["model"],
                 _dumps(fields["settings"]), fields["created_at"], _dumps({k: stamp for k in fields}),
                 _dumps(fields["policy"])))
            if cur.rowcount:
                # updates of this chat that arrived before its creation (another device's log read
                # first) were kept in `ops` with nowhere to go: apply them now
                for r in db.execute("SELECT device_id, seq, lamport, body, created_at FROM ops WHERE session_id=?"
                                    " AND kind='chat.update' AND json_extract(body, '$.chat')=?",
                                    (op.session_id, b["id"])).fetchall():
                    self._update_chat(db, Op(op.session_id, r[0], r[1], r[2], "chat.update", json.loads(r[3]), r[4]))
            else:
                self._update_chat(db, op, {"chat": b["id"], **fields}, (*CHAT_FIELDS, "created_at"))
        elif op.kind == "chat.update":
            self._update_chat(db, op)
        elif op.kind == "checkpoint.add":
            db.execute(
                "INSERT OR IGNORE INTO checkpoints(session_id, device_id, number, hash, tokens, messages, frontier,"
                " created_at, pk, signature) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (op.session_id, op.device_id, b["number"], bytes.fromhex(b["hash"]), b["tokens"], b["messages"],
                 _dumps(b["frontier"]), b["created_at"], bytes.fromhex(b["pk"]), bytes.fromhex(b["signature"])))
        # Unknown kinds (written by a newer version) are kept in the log and ignored here.
        db.execute(
            "UPDATE sessions SET lamport=max(lamport, ?), last_activity=max(last_activity, ?) WHERE id=?",
            (op.lamport, op.created_at, op.session_id))

    @staticmethod
    def _update_chat(db: sqlite3.Connection, op: Op, body: dict | None = None, keys: tuple = CHAT_FIELDS) -> None:
        """Fields of a chat, last-writer-wins each by (lamport, device id). An update of a chat not (yet)
        here does nothing: the chat's creation applies it when it comes (see chat.create)."""
        b = op.body if body is None else body
        stamp = [op.lamport, op.device_id]
        row = db.execute("SELECT stamps FROM chats WHERE session_id=? AND id=?", (op.session_id, b.get("chat"))).fetchone()
        if row is None:
            return
        stamps = json.loads(row["stamps"])
        sets, args = [], []
        for k, v in b.items():
            if k in keys and _stamp_newer(stamp, stamps.get(k)):
                stamps[k] = stamp
                sets.append(f"{k}=?")
                args.append(_dumps(v) if k in ("compacted", "policy", "settings") and v is not None else v)
        if sets:
            db.execute(f"UPDATE chats SET {', '.join(sets)}, stamps=? WHERE session_id=? AND id=?",
                       (*args, _dumps(stamps), op.session_id, b["chat"]))

    # ------------------------------------------------------------------ sessions
    async def create_session(self, spec: dict) -> dict:
        sid = spec.get("id")
        sid = check_id(sid, "session id") if sid is not None else new_id()
        t = now()
        chats = spec.get("chats") or [{"id": "main", "name": "main", "system_prompt": None, "model": None,
                                        "settings": {}}]
        chats = [{**c, "created_at": t} for c in chats]
        body = {k: spec.get(k) for k in ("user", "name", "system_prompt", "model", "expires_at")}
        for k in JSON_FIELDS:
            if k in spec:
                body[k] = spec[k]
        if spec.get("provenance"):
            body["provenance"] = spec["provenance"]
        body.update(created_at=t, current_chat=spec.get("current_chat") or chats[0]["id"], chats=chats)
        await self._begin()
        try:
            if await self._one("SELECT 1 FROM sessions WHERE id=?", (sid,)):
                raise Conflict(f"a session with id {sid!r} already exists; choose another id or omit it")
            await self._check_session_limits(spec.get("user"))
            await self._local_op(sid, 0, "session.create", body, t)
            await self.conn.execute("INSERT INTO sync_state(session_id) VALUES (?)", (sid,))
        except BaseException:
            await self._rollback()
            raise
        await self._commit([{"type": "session.created", "session": sid}])
        return await self.get_session(sid)

    async def _check_session_limits(self, user: str | None) -> None:
        cap = self.limits.get("max_active_sessions")
        if cap and (await self._one("SELECT count(*) FROM sessions WHERE status='active'"))[0] >= cap:
            raise LimitReached(f"this daemon already has {cap} active sessions (max_active_sessions); end or "
                               f"delete one first", limit="max_active_sessions", value=cap)
        cap = self.limits.get("max_active_sessions_per_user")
        if cap and user is not None and (await self._one(
                "SELECT count(*) FROM sessions WHERE status='active' AND user=?", (user,)))[0] >= cap:
            raise LimitReached(f"user {user!r} already has {cap} active sessions (max_active_sessions_per_user); "
                               f"end or delete one first", limit="max_active_sessions_per_user", value=cap)

    def _session_dict(self, row: aiosqlite.Row) -> dict:
        d = {k: row[k] for k in ("id", "user", "name", "system_prompt", "model", "status", "current_chat",
                                  "created_at", "last_activity", "expires_at", "access", "tokens_used")}
        d["provenance"] = json.loads(row["provenance"]) if row["provenance"] else None
        for k in JSON_FIELDS:
            d[k] = json.loads(row[k])
        return d

    async def get_session(self, sid: str, *, counts: bool = False) -> dict:
        d = self._session_dict(await self._session_row(sid))
        if counts:
            # count(*) is read off the covering index (~7 ms for 100,000 messages); the token total is kept
            # in the session row by every insert (a sum over the messages took 40-70 ms)
            d["message_count"] = (await self._one("SELECT count(*) FROM messages WHERE session_id=?", (sid,)))[0]
            d["tokens"] = d["tokens_used"]
            d["chat_count"] = (await self._one("SELECT count(*) FROM chats WHERE session_id=?", (sid,)))[0]
        return d

    async def list_sessions(self, *, user: str | None = None, status: str | None = None,
                            tag: str | None = None, limit: int = 50, after: str | None = None) -> list[dict]:
        where, args = [], []
        if user is not None:
            where.append("user=?")
            args.append(user)
        if status is not None:
            where.append("status=?")
            args.append(status)
        if tag is not None:
            where.append("EXISTS (SELECT 1 FROM json_each(sessions.tags) WHERE value=?)")
            args.append(tag)
        if after is not None:
            where.append("id>?")
            args.append(after)
        sql = "SELECT * FROM sessions" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id LIMIT ?"
        return [self._session_dict(r) for r in await self._all(sql, (*args, limit))]

    async def session_ids(self) -> list[str]:
        return [r[0] for r in await self._all("SELECT id FROM sessions ORDER BY id")]

    async def update_session(self, sid: str, fields: dict, *, event: str = "session.updated") -> dict:
        await self._begin()
        try:
            row = await self._writable_row(sid)
            if "current_chat" in fields:
                if not await self._one("SELECT 1 FROM chats WHERE session_id=? AND id=?", (sid, fields["current_chat"])):
                    raise NotFound(f"session {sid!r} has no chat {fields['current_chat']!r} (see `sessiond chat ls`)")
            await self._local_op(sid, row["lamport"], "session.update", fields, now())
        except BaseException:
            await self._rollback()
            raise
        await self._commit([{"type": event, "session": sid, "fields": sorted(fields)}])
        return await self.get_session(sid)

    async def set_status(self, sid: str, status: str) -> dict:
        row = await self._writable_row(sid)
        current = row["status"]
        if status == current:
            return self._session_dict(row)
        if current == "ended":
            raise Conflict(f"session {sid!r} has ended; an ended session cannot be paused or resumed")
        if status == "paused" and current != "active" or status == "active" and current != "paused":
            raise Conflict(f"session {sid!r} is {current}; cannot change it to {status}")
        return await self.update_session(sid, {"status": status}, event=f"session.{'resumed' if status == 'active' else status}")

    async def delete_session(self, sid: str) -> None:
        await self._begin()
        try:
            await self._session_row(sid)
            await self.conn.execute("DELETE FROM sessions WHERE id=?", (sid,))
        except BaseException:
            await self._rollback()
            raise
        await self._commit([{"type": "session.deleted", "session": sid}])

    # ------------------------------------------------------------------ chats
    def _chat_dict(self, row: aiosqlite.Row, current: str | None) -> dict:
        return {"id": row["id"], "name": row["name"], "system_prompt": row["system_prompt"], "model": row["model"],
                "settings": json.loads(row["settings"]), "created_at": row["created_at"],
                "current": row["id"] == current, "policy": json.loads(row["policy"]),
                "compacted_upto": _cutoff_id(row["compacted"])}

    async def create_chat(self, sid: str, spec: dict) -> dict:
        cid = spec.get("id")
        cid = check_id(cid, "chat id") if cid is not None else new_id()
        t = now()
        body = {"id": cid, "name": spec.get("name") or cid, "system_prompt": spec.get("system_prompt"),
                "model": spec.get("model"), "settings": spec.get("settings") or {}, "created_at": t}
        if spec.get("policy"):
            body["policy"] = spec["policy"]
        await self._begin()
        try:
            row = await self._writable_row(sid)
            if await self._one("SELECT 1 FROM chats WHERE session_id=? AND id=?", (sid, cid)):
                raise Conflict(f"session {sid!r} already has a chat {cid!r}")
            cap = self.limits.get("max_chats_per_session")
            if cap and (await self._one("SELECT count(*) FROM chats WHERE session_id=?", (sid,)))[0] >= cap:
                raise LimitReached(f"session {sid!r} already has {cap} chats (max_chats_per_session)",
                                   limit="max_chats_per_session", value=cap)
            op = await self._local_op(sid, row["lamport"], "chat.create", body, t)
            if spec.get("switch"):
                await self._local_op(sid, op.lamport, "session.update", {"current_chat": cid}, t)
        except BaseException:
            await self._rollback()
            raise
        await self._commit([{"type": "chat.created", "session": sid, "chat": cid}])
        return await self.get_chat(sid, cid)

    async def get_chat(self, sid: str, cid: str) -> dict:
        srow = await self._session_row(sid)
        row = await self._one("SELECT * FROM chats WHERE session_id=? AND id=?", (sid, cid))
        if row is None:
            raise NotFound(f"session {sid!r} has no chat {cid!r} (see `sessiond chat ls {sid}`)")
        return self._chat_dict(row, srow["current_chat"])

    async def list_chats(self, sid: str) -> list[dict]:
        srow = await self._session_row(sid)
        rows = await self._all("SELECT * FROM chats WHERE session_id=? ORDER BY created_at, id", (sid,))
        return [self._chat_dict(r, srow["current_chat"]) for r in rows]

    async def resolve_chat(self, sid: str, ref: str) -> str:
        """A chat given by id or, failing that, by a unique name."""
        if await self._one("SELECT 1 FROM chats WHERE session_id=? AND id=?", (sid, ref)):
            return ref
        rows = await self._all("SELECT id FROM chats WHERE session_id=? AND name=?", (sid, ref))
        if len(rows) == 1:
            return rows[0][0]
        if rows:
            raise Conflict(f"several chats of session {sid!r} are named {ref!r}; use the chat id")
        raise NotFound(f"session {sid!r} has no chat {ref!r} (see `sessiond chat ls {sid}`)")

    # ------------------------------------------------------------------ messages
    def _message_dict(self, row: aiosqlite.Row) -> dict:
        d = {"id": message_id(row["device_id"], row["seq"]), "chat": row["chat_id"], "role": row["role"],
             "content": row["content"], "tokens": row["tokens"], "created_at": row["created_at"],
             "device": row["device_id"], "seq": row["seq"], "lamport": row["lamport"]}
        if row["extra"]:
            d.update(json.loads(row["extra"]))
        return d

    async def append_messages(self, sid: str, messages: list[dict], chat: str | None = None, *,
                              key: str | None = None, answer: bool = False) -> list[dict]:
        """Append validated messages, in order, in one transaction. Returns them as stored (without
        their content, which the caller has). The whole transaction runs in one hop to the database
        thread: this is the hot path.

        With an idempotency `key`, a repeat of the same request (a client's retry) is answered with the
        first one's result and changes nothing; the same key with other messages is refused.

        `answer`: a model's answer that the provider already gave (and counted): it is recorded even
        past the token quota or a context budget that cannot compact (the checks ran before asking)."""
        if not messages:
            raise Invalid("no messages to append")
        t = now()
        device = self.device_id
        digest = None if key is None else hashlib.sha256(
            json.dumps([chat, messages], sort_keys=True, separators=(",", ":")).encode()).hexdigest()

        def work(db: sqlite3.Connection) -> tuple[list[dict], str | None, bool]:
            db.execute("BEGIN IMMEDIATE")
            try:
                if key is not None:
                    seen = db.execute("SELECT request, result FROM idempotency WHERE session_id=? AND key=?",
                                      (sid, key)).fetchone()
                    if seen is not None:
                        if seen[0] != digest:
                            raise IdempotencyKeyReused(
                                f"Idempotency-Key {key!r} was already used for other messages in session {sid!r};"
                                f" send a new key with each new request (the same key only to retry it)")
                        db.execute("ROLLBACK")
                        return json.loads(seen[1]), None, False
                row = db.execute("SELECT status, access, current_chat, lamport, policy, tokens_used FROM sessions"
                                 " WHERE id=?", (sid,)).fetchone()
                if row is None:
                    raise NotFound(f"no session {sid!r} on this device (see `sessiond ls`)")
                status, access, current, lamport, policy_text, used = row
                if access == "read":
                    raise Conflict(f"session {sid!r} was imported with a read-only share code; this device can "
                                   f"follow it but not change it (ask for a code made with `sessiond share --write`)")
                if status != "active":
                    raise Conflict(f"session {sid!r} is {status}; "
                                   + ("resume it first (`sessiond resume`)" if status == "paused"
                                      else "an ended session takes no new messages (clone it to continue)"))
                chat_id = chat or current
                chats = {m.get("chat") or chat_id for m in messages}
                for c in chats:
                    if c != current and db.execute("SELECT 1 FROM chats WHERE session_id=? AND id=?",
                                                   (sid, c)).fetchone() is None:
                        raise NotFound(f"session {sid!r} has no chat {c!r} (see `sessiond chat ls {sid}`)")
                policy = json.loads(policy_text) if policy_text != "{}" else {}
                cap = self.limits.get("max_messages_per_chat")
                if cap:
                    for c in chats:
                        have = db.execute("SELECT count(*) FROM messages WHERE session_id=? AND chat_id=?",
                                          (sid, c)).fetchone()[0]
                        adding = sum(1 for m in messages if (m.get("chat") or chat_id) == c)
                        if have + adding > cap:
                            raise LimitReached(f"chat {c!r} of session {sid!r} holds {have} messages; {adding} more "
                                               f"would pass max_messages_per_chat ({cap}). Start another chat or "
                                               f"clone the session", limit="max_messages_per_chat", value=cap)
                new_tokens = sum(map(charge, messages))
                quota = policy.get("token_quota")
                if quota and used + new_tokens > quota and not answer:
                    raise QuotaExceeded(
                        f"session {sid!r} has used {used} of its {quota} tokens; these messages need {new_tokens} "
                        f"more. Raise the quota (`sessiond set {sid} --token-quota N`), or go on in a new session: "
                        f"`sessiond clone {sid}` (same settings, no history) or `sessiond fork {sid} MESSAGE_ID` "
                        f"(history up to that message). Compacting does not help: it frees context, not quota",
                        used=used, quota=quota, needed=new_tokens)
                got = db.execute("SELECT last_seq FROM logs WHERE session_id=? AND device_id=?", (sid, device)).fetchone()
                seq = got[0] if got else 0
                for c in sorted(chats):  # context budgets, before anything is written
                    chat_tokens = sum(m.get("tokens") or 0 for m in messages if (m.get("chat") or chat_id) == c)
                    try:
                        cut = self._context_check(db, sid, c, policy, chat_tokens)
                    except ContextOverflow:
                        if not answer:
                            raise
                        cut = None
                    if cut is not None:
                        seq += 1
                        lamport += 1
                        body = {"chat": c, "compacted": cut}
                        db.execute("INSERT INTO ops(session_id, device_id, seq, lamport, kind, body, created_at)"
                                   " VALUES (?,?,?,?,?,?,?)", (sid, device, seq, lamport, "chat.update", _dumps(body), t))
                        self._apply_sync(db, Op(sid, device, seq, lamport, "chat.update", body, t))
                seq0, lam0 = seq + 1, lamport + 1
                n = len(messages)
                rows = []
                for i, m in enumerate(messages):
                    extra = None
                    if not m.keys() <= _PLAIN:
                        e = {k: m[k] for k in EXTRA_KEYS if m.get(k) is not None}
                        extra = _dumps(e) if e else None
                    rows.append((sid, m.get("chat") or chat_id, device, seq0 + i, lam0 + i, m["role"], m["content"],
                                 m.get("tokens"), t, extra))
                db.executemany("INSERT INTO messages(session_id, chat_id, device_id, seq, lamport, role, content,"
                               " tokens, created_at, extra) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
                db.execute("INSERT INTO logs(session_id, device_id, last_seq) VALUES (?,?,?) ON CONFLICT(session_id,"
                           " device_id) DO UPDATE SET last_seq=excluded.last_seq", (sid, device, seq0 + n - 1))
                db.execute("UPDATE sessions SET lamport=?, last_activity=?, tokens_used=tokens_used+? WHERE id=?",
                           (lam0 + n - 1, t, new_tokens, sid))
                out = [{"id": f"{device}-{r[3]}", "chat": r[1], "role": r[5], "tokens": r[7], "created_at": t,
                        "device": device, "seq": r[3], "lamport": r[4]} for r in rows]
                if key is not None:  # remembered in this transaction: committed together, or not at all
                    db.execute("INSERT INTO idempotency(session_id, key, request, result, created_at)"
                               " VALUES (?,?,?,?,?)", (sid, key, digest, _dumps(out), t))
                    db.execute("DELETE FROM idempotency WHERE session_id=? AND created_at < ?",
                               (sid, t - IDEMPOTENCY_TTL))
                    edge = db.execute("SELECT created_at FROM idempotency WHERE session_id=? ORDER BY created_at DESC"
                                      " LIMIT 1 OFFSET ?", (sid, IDEMPOTENCY_KEEP)).fetchone()
                    if edge is not None:
                        db.execute("DELETE FROM idempotency WHERE session_id=? AND created_at <= ?", (sid, edge[0]))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            interval = policy.get("checkpoint_interval") or DEFAULT_CHECKPOINT_INTERVAL
            return out, chat_id, (used // interval) != ((used + new_tokens) // interval)

        async with self._write_lock:
            out, chat_id, checkpoint_due = await self.conn._execute(work, self.conn._conn)
        if chat_id is None:  # a repeat: answered as the first time, nothing changed
            return out
        ev = {"type": "messages.appended", "session": sid, "chat": chat_id, "ids": [m["id"] for m in out]}
        if checkpoint_due:  # the session's tokens passed a multiple of its checkpoint interval
            ev["checkpoint_due"] = True
        for fn in list(self.listeners):
            fn(ev)
        return out

    # ------------------------------------------------------------------ clone and fork
    async def _copy_spec(self, sid: str) -> dict:
        s = await self.get_session(sid)
        chats = [{"id": c["id"], "name": c["name"], "system_prompt": c["system_prompt"], "model": c["model"],
                  "settings": c["settings"], "policy": c["policy"]} for c in await self.list_chats(sid)]
        spec = {k: s[k] for k in ("user", "system_prompt", "model", "settings", "initial_messages", "metadata",
                                  "tags", "preferences", "policy")}
        spec.update(chats=chats, current_chat=s["current_chat"], name=s["name"])
        return spec

    async def clone(self, sid: str, *, new_id: str | None = None, name: str | None = None) -> dict:
        """A new session with the same settings, chats and initial context, and no conversation."""
        spec = await self._copy_spec(sid)
        spec.update(id=new_id, provenance={"kind": "clone", "session": sid})
        if name:
            spec["name"] = name
        return await self.create_session(spec)

    async def fork(self, sid: str, at: str, *, new_id: str | None = None, name: str | None = None) -> dict:
        """A new session holding the history up to and including message `at` (in every chat)."""
        lam, dev, seq, _ = await self._message_order(sid, at)
        spec = await self._copy_spec(sid)
        spec.update(id=new_id, provenance={"kind": "fork", "session": sid, "message": at})
        if name:
            spec["name"] = name
        rows = await self._all("SELECT chat_id, role, content, tokens, extra FROM messages WHERE session_id=? AND"
                               " (lamport, device_id, seq) <= (?,?,?) ORDER BY lamport, device_id, seq",
                               (sid, lam, dev, seq))
        new = await self.create_session(spec)
        if rows:
            msgs = [{"chat": r[0], "role": r[1], "content": r[2], "tokens": r[3], **(json.loads(r[4]) if r[4] else {})}
                    for r in rows]
            try:
                await self.append_messages(new["id"], msgs)
            except BaseException:
                await self.delete_session(new["id"])
                raise
        return await self.get_session(new["id"], counts=True)

    # ------------------------------------------------------------------ context budgets and compaction
    @staticmethod
    def _chat_budget(db: sqlite3.Connection, sid: str, chat: str, policy: dict) -> tuple[dict, list | None]:
        row = db.execute("SELECT policy, compacted FROM chats WHERE session_id=? AND id=?", (sid, chat)).fetchone()
        cp = json.loads(row[0]) if row and row[0] != "{}" else {}
        merged = {k: cp.get(k, policy.get(k)) for k in CHAT_POLICY_KEYS}
        return merged, (json.loads(row[1]) if row and row[1] else None)

    @staticmethod
    def _active(db: sqlite3.Connection, sid: str, chat: str, cut: list | None) -> list[tuple]:
        """The chat's active context: (lamport, device, seq, role, tokens) after the compaction cutoff
        (system messages always stay)."""
        if cut is None:
            return db.execute("SELECT lamport, device_id, seq, role, coalesce(tokens, 0) FROM messages WHERE"
                              " session_id=? AND chat_id=? ORDER BY lamport, device_id, seq", (sid, chat)).fetchall()
        return db.execute("SELECT lamport, device_id, seq, role, coalesce(tokens, 0) FROM messages WHERE session_id=?"
                          " AND chat_id=? AND ((lamport, device_id, seq) > (?,?,?) OR role='system')"
                          " ORDER BY lamport, device_id, seq", (sid, chat, *cut)).fetchall()

    def _context_check(self, db: sqlite3.Connection, sid: str, chat: str, policy: dict, adding: int) -> list | None:
        """Check the chat's context budget for `adding` more tokens. Returns a new compaction cutoff if
        the chat must compact first, None if it fits; raises ContextOverflow if it cannot fit."""
        p, cut = self._chat_budget(db, sid, chat, policy)
        budget = p.get("max_context_tokens")
        if not budget:
            return None
        margin = p.get("context_margin") or DEFAULT_CONTEXT_MARGIN
        active = self._active(db, sid, chat, cut)
        total = sum(r[4] for r in active)
        if total + adding <= budget * margin:
            return None
        if p.get("auto_compact") is False:
            raise ContextOverflow(
                f"chat {chat!r} of session {sid!r} holds {total} tokens of context; {adding} more would pass its "
                f"budget of {budget} x {margin} and automatic compaction is off. Compact it (`sessiond compact`) "
                f"or start another chat", active=total, budget=budget, adding=adding)
        if adding > budget * margin:
            raise ContextOverflow(f"these messages alone ({adding} tokens) exceed chat {chat!r}'s context budget "
                                  f"of {budget} x {margin}", budget=budget, adding=adding)
        return self._cut_for(active, max(0, budget * margin / 2 - adding), cut)

    @staticmethod
    def _cut_for(active: list[tuple], target: float, cut: list | None) -> list | None:
        """Drop the oldest non-system messages until the rest is at most `target` tokens."""
        total = sum(r[4] for r in active)
        new_cut = cut
        for lam, dev, seq, role, tokens in active:
            if total <= target:
                break
            if role == "system":
                continue
            total -= tokens
            new_cut = [lam, dev, seq]
        return new_cut

    async def compact(self, sid: str, chat: str | None = None, *, target_tokens: int | None = None,
                      undo: bool = False) -> dict:
        """Compact a chat's active context down to `target_tokens` (or its budget's half), or undo all
        compaction. Dropped messages stay in the history."""
        srow = await self._writable_row(sid)
        chat = chat or srow["current_chat"]
        policy = json.loads(srow["policy"])

        def work(db: sqlite3.Connection):
            p, cut = self._chat_budget(db, sid, chat, policy)
            if undo:
                return None
            active = self._active(db, sid, chat, cut)
            target = target_tokens
            if target is None:
                budget = p.get("max_context_tokens")
                if not budget:
                    raise Invalid(f"chat {chat!r} has no context budget: give --target-tokens")
                target = budget * (p.get("context_margin") or DEFAULT_CONTEXT_MARGIN) / 2
            return self._cut_for(active, target, cut)

        await self.get_chat(sid, chat)
        cut = await self.reader._execute(work, self.reader._conn)
        await self._begin()
        try:
            row = await self._writable_row(sid)
            await self._local_op(sid, row["lamport"], "chat.update", {"chat": chat, "compacted": cut}, now())
        except BaseException:
            await self._rollback()
            raise
        await self._commit([{"type": "chat.compacted", "session": sid, "chat": chat}])
        return await self.context(sid, chat)

    async def context(self, sid: str, chat: str | None = None) -> dict:
        srow = await self._session_row(sid)
        chat = chat or srow["current_chat"]
        await self.get_chat(sid, chat)
        policy = json.loads(srow["policy"])

        def work(db: sqlite3.Connection):
            p, cut = self._chat_budget(db, sid, chat, policy)
            active = self._active(db, sid, chat, cut)
            total = db.execute("SELECT count(*) FROM messages WHERE session_id=? AND chat_id=?", (sid, chat)).fetchone()[0]
            return p, cut, active, total

        p, cut, active, total = await self.reader._execute(work, self.reader._conn)
        return {"session": sid, "chat": chat, "policy": p, "compacted_upto": message_id(cut[1], cut[2]) if cut else None,
                "active_messages": len(active), "active_tokens": sum(r[4] for r in active),
                "compacted_messages": total - len(active), "messages": total}

    async def context_messages(self, sid: str, chat: str) -> list[dict]:
        """The chat's active context as messages to send to a model, oldest first: every message the
        compaction has not set aside (system messages always stay), as {role, content[, name,
        tool_call_id]}."""
        srow = await self._session_row(sid)
        policy = json.loads(srow["policy"])

        def work(db: sqlite3.Connection):
            _, cut = self._chat_budget(db, sid, chat, policy)
            sql = "SELECT role, content, extra FROM messages WHERE session_id=? AND chat_id=?"
            args: tuple = (sid, chat)
            if cut is not None:
                sql += " AND ((lamport, device_id, seq) > (?,?,?) OR role='system')"
                args += tuple(cut)
            return db.execute(sql + " ORDER BY lamport, device_id, seq", args).fetchall()

        out = []
        for role, content, extra in await self.reader._execute(work, self.reader._conn):
            m = {"role": role, "content": content}
            if extra:
                e = json.loads(extra)
                m.update({k: e[k] for k in ("name", "tool_call_id") if e.get(k) is not None})
            out.append(m)
        return out

    async def chat_history(self, sid: str, chat: str) -> list[tuple[str, str]]:
        """Every message of a chat as (role, content), oldest first (compacted ones too)."""
        return [tuple(r) for r in await self._all("SELECT role, content FROM messages WHERE session_id=? AND"
                                                  " chat_id=? ORDER BY lamport, device_id, seq", (sid, chat))]

    async def idempotent_result(self, sid: str, key: str) -> list[dict] | None:
        """What an append with this idempotency key stored, if one did (and is still remembered)."""
        row = await self._fresh("SELECT result FROM idempotency WHERE session_id=? AND key=?", (sid, key))
        return json.loads(row[0][0]) if row else None

    async def get_message(self, sid: str, mid: str) -> dict:
        dev, seq = parse_message_id(mid)
        row = await self._one("SELECT * FROM messages WHERE session_id=? AND device_id=? AND seq=?", (sid, dev, seq))
        if row is None:
            raise NotFound(f"session {sid!r} has no message {mid!r}")
        return self._message_dict(row)

    # ------------------------------------------------------------------ quotas, checkpoints, statistics
    async def quota(self, sid: str) -> dict:
        row = await self._session_row(sid)
        policy = json.loads(row["policy"])
        quota = policy.get("token_quota")
        used = row["tokens_used"]
        return {"session": sid, "tokens_used": used, "token_quota": quota,
                "remaining": (quota - used) if quota else None, "level": warning_level(used, quota),
                "thresholds": {"warning": 0.7, "critical": 0.9, "exhausted": 1.0}}

    async def conversation(self, sid: str) -> list[tuple]:
        """Every message of the session in its global order, as (device, seq, chat, role, content, tokens)."""
        return [tuple(r) for r in await self._all(
            "SELECT device_id, seq, chat_id, role, content, coalesce(tokens, 0) FROM messages WHERE session_id=?"
            " ORDER BY lamport, device_id, seq", (sid,))]

    async def conversation_chain(self, sid: str, after: dict[str, int] | None) -> tuple[Any, dict[str, int], list[tuple]]:
        """For checkpoints, from one snapshot: the session's identity (its row id and creation time, which
        tell a session from a later one of the same id), its frontier (each device's last seq here,
        as `devices`), and its messages as (lamport, device, seq, chat, role, content, tokens) with
        after[d] < seq <= frontier[d] for every device d (after None: all of them), in global order."""
        def work(conn: sqlite3.Connection) -> tuple[Any, dict[str, int], list[tuple]]:
            cur = conn.cursor()
            cur.row_factory = None
            own = not conn.in_transaction
            if own:
                cur.execute("BEGIN")
            try:
                ident = cur.execute("SELECT rowid, created_at FROM sessions WHERE id=?", (sid,)).fetchone()
                frontier = dict(cur.execute("SELECT device_id, last_seq FROM logs WHERE session_id=?", (sid,)).fetchall())
                rows: list[tuple] = []
                for device, hi in frontier.items():
                    lo = (after or {}).get(device, 0)
                    if hi > lo:
                        rows += cur.execute("SELECT lamport, device_id, seq, chat_id, role, content, coalesce(tokens, 0)"
                                            " FROM messages WHERE session_id=? AND device_id=? AND seq>? AND seq<=?",
                                            (sid, device, lo, hi)).fetchall()
            finally:
                if own and conn.in_transaction:
                    cur.execute("COMMIT")
                cur.close()
            rows.sort()  # global order: (lamport, device, seq) is unique, so the rest never decides
            return ident, frontier, rows

        conn = self._read_conn()
        return await conn._execute(work, conn._conn)

    async def add_checkpoint(self, sid: str, body: dict) -> dict:
        await self._begin()
        try:
            row = await self._session_row(sid)
            await self._local_op(sid, row["lamport"], "checkpoint.add", body, now())
        except BaseException:
            await self._rollback()
            raise
        await self._commit([{"type": "checkpoint.created", "session": sid, "number": body["number"]}])
        return body

    async def checkpoints(self, sid: str) -> list[dict]:
        await self._session_row(sid)
        return [{"session": sid, "device": r["device_id"], "number": r["number"], "hash": r["hash"].hex(),
                 "tokens": r["tokens"], "messages": r["messages"], "frontier": json.loads(r["frontier"]),
                 "created_at": r["created_at"], "pk": r["pk"].hex(), "signature": r["signature"].hex()}
                for r in await self._all("SELECT * FROM checkpoints WHERE session_id=? ORDER BY created_at, device_id,"
                                         " number", (sid,))]

    async def next_checkpoint_number(self, sid: str) -> int:
        row = await self._one("SELECT max(number) FROM checkpoints WHERE session_id=? AND device_id=?",
                              (sid, self.device_id))
        return (row[0] or 0) + 1

    async def stats(self, sid: str | None = None, user: str | None = None) -> dict:
        if sid is not None:
            s = await self.get_session(sid, counts=True)
            chats = []
            for c in await self.list_chats(sid):
                rows = await self._all("SELECT role, created_at, extra FROM messages WHERE session_id=? AND chat_id=?"
                                       " ORDER BY lamport, device_id, seq", (sid, c["id"]))
                waits, pending = [], None
                firsts, totals = [], []  # a model's answers through sessiond: their measured times
                for role, t, extra in rows:
                    if extra and '"response"' in extra:
                        r = json.loads(extra).get("response") or {}
                        if isinstance(r.get("first_token_ms"), int):
                            firsts.append(r["first_token_ms"])
                        if isinstance(r.get("total_ms"), int):
                            totals.append(r["total_ms"])
                    if role == "user":
                        pending = t if pending is None else pending
                    elif role == "assistant" and pending is not None:
                        waits.append(t - pending)
                        pending = None
                chats.append({"chat": c["id"], "name": c["name"], "messages": len(rows),
                              "avg_response_seconds": round(sum(waits) / len(waits), 3) if waits else None,
                              "answers": len(totals),
                              "avg_first_token_seconds": round(sum(firsts) / len(firsts) / 1000, 3) if firsts else None,
                              "avg_answer_seconds": round(sum(totals) / len(totals) / 1000, 3) if totals else None})
            return {"session": sid, "status": s["status"], "chats": len(chats), "messages": s["message_count"],
                    "tokens": s["tokens_used"], "created_at": s["created_at"], "last_activity": s["last_activity"],
                    "per_chat": chats}
        where, args = ("WHERE s.user=?", (user,)) if user is not None else ("", ())
        row = await self._one(
            f"SELECT count(*), coalesce(sum(s.tokens_used), 0), "
            f"coalesce(sum((SELECT count(*) FROM messages m WHERE m.session_id=s.id)), 0), "
            f"coalesce(sum(s.status='active'), 0), coalesce(sum(s.status='paused'), 0), "
            f"coalesce(sum(s.status='ended'), 0) FROM sessions s {where}", args)
        out = {"sessions": row[0], "tokens": row[1], "messages": row[2], "active": row[3], "paused": row[4],
               "ended": row[5]}
        if user is not None:
            out["user"] = user
        else:
            out["users"] = [{"user": r[0], "sessions": r[1], "tokens": r[2]} for r in await self._all(
                "SELECT user, count(*), coalesce(sum(tokens_used), 0) FROM sessions GROUP BY user ORDER BY user")]
        return out

    async def expired(self, t: float) -> list[dict]:
        """Sessions past their expiry or idle timeout that are not ended yet."""
        out = []
        for r in await self._all("SELECT id, expires_at, last_activity, policy, status FROM sessions WHERE status!='ended'"):
            # a value that is not a number (stored by an older sessiond) never expires its session, and
            # must not stop the others from expiring
            exp = r["expires_at"] if _is_number(r["expires_at"]) else None
            idle = json.loads(r["policy"]).get("idle_timeout")
            idle = idle if _is_number(idle) and _is_number(r["last_activity"]) else None
            if (exp is not None and exp <= t) or (idle and r["last_activity"] + idle <= t):
                out.append({"id": r["id"], "expires_at": r["expires_at"], "last_activity": r["last_activity"]})
        return out

    async def older_than(self, t: float) -> list[dict]:
        return [dict(r) for r in await self._all(
            "SELECT id, name, status, last_activity FROM sessions WHERE last_activity < ? ORDER BY id", (t,))]

    async def _message_order(self, sid: str, mid: str) -> tuple:
        dev, seq = parse_message_id(mid)
        row = await self._one("SELECT lamport, device_id, seq, chat_id FROM messages WHERE session_id=? AND device_id=?"
                              " AND seq=?", (sid, dev, seq))
        if row is None:
            raise NotFound(f"session {sid!r} has no message {mid!r}")
        return tuple(row)

    async def list_messages(self, sid: str, *, chat: str | None = None, limit: int = 100,
                            before: str | None = None, after: str | None = None, all_chats: bool = False) -> list[dict]:
        srow = await self._session_row(sid)
        where, args = ["session_id=?"], [sid]
        if not all_chats:
            chat_id = chat or srow["current_chat"]
            where.append("chat_id=?")
            args.append(chat_id)
        if after:
            lam, dev, seq, _ = await self._message_order(sid, after)
            where.append("(lamport, device_id, seq) > (?,?,?)")
            args += [lam, dev, seq]
        if before:
            lam, dev, seq, _ = await self._message_order(sid, before)
            where.append("(lamport, device_id, seq) < (?,?,?)")
            args += [lam, dev, seq]
        order = "DESC" if before and not after else "ASC"
        sql = (f"SELECT * FROM messages WHERE {' AND '.join(where)} "
               f"ORDER BY lamport {order}, device_id {order}, seq {order} LIMIT ?")
        rows = await self._all(sql, (*args, limit))
        if order == "DESC":
            rows.reverse()
        return [self._message_dict(r) for r in rows]

    # ------------------------------------------------------------------ counts and status
    async def counts(self) -> dict:
        out = {"sessions": 0, "active": 0, "paused": 0, "ended": 0}
        for status, n in await self._all("SELECT status, count(*) FROM sessions GROUP BY status"):
            out[status] = n
            out["sessions"] += n
        out["messages"] = (await self._one("SELECT count(*) FROM messages"))[0]
        out["chats"] = (await self._one("SELECT count(*) FROM chats"))[0]
        return out

    # ------------------------------------------------------------------ the log, for sync
    async def log_ops(self, sid: str, device_id: str, after_seq: int, upto_seq: int | None = None) -> list[Op]:
        """This (session, device) log's operations with after_seq < seq <= upto_seq, in seq order."""
        hi = upto_seq if upto_seq is not None else (1 << 62)
        ops = [Op(sid, device_id, r["seq"], r["lamport"], r["kind"], json.loads(r["body"]), r["created_at"])
               for r in await _query(self.reader, "SELECT seq, lamport, kind, body, created_at FROM ops WHERE"
                                     " session_id=? AND device_id=? AND seq>? AND seq<=? ORDER BY seq",
                                     (sid, device_id, after_seq, hi))]
        mrows = await _query(self.reader, "SELECT * FROM messages WHERE session_id=? AND device_id=? AND seq>? AND"
                             " seq<=? ORDER BY seq", (sid, device_id, after_seq, hi))
        for r in mrows:
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
        push's hot path, read in one statement and one hop to the reader's thread."""
        hi = upto_seq if upto_seq is not None else (1 << 62)
        return await self.reader._execute(_log_run_sync, self.reader._conn, sid, device_id, after_seq, hi)

    def run_reader(self) -> "RunReader":
        """A read-only connection of its own, for reading long runs from a worker thread."""
        return RunReader(self.path)

    async def get_lamport(self, sid: str) -> int:
        return (await self._session_row(sid))["lamport"]

    async def last_seq(self, sid: str, device_id: str | None = None) -> int:
        rows = await self._fresh("SELECT last_seq FROM logs WHERE session_id=? AND device_id=?",
                                 (sid, device_id or self.device_id))
        return rows[0][0] if rows else 0

    async def move_store(self, old_url: str) -> int:
        """The daemon moves to another store: sessions shared through the old one stay there (their
        remote names it), every other session's log is to be pushed to the new store from its start.
        Returns how many sessions are pushed again."""
        await self._begin()
        try:
            await self.conn.execute("UPDATE remotes SET store_url=? WHERE store_url IS NULL", (old_url,))
            cur = await self.conn.execute(
                "UPDATE sync_state SET pushed_seq=0, tree=NULL, pending=NULL "
                "WHERE session_id NOT IN (SELECT session_id FROM remotes)")
            n = cur.rowcount
        except BaseException:
            await self._rollback()
            raise
        await self._commit()
        return n

    async def adopt_device_id(self, device_id: str) -> None:
        """Become `device_id` (a device key restored into a fresh home finds its earlier logs published
        under that id). Refused once this home has written anything of its own under its current id."""
        if device_id == self.device_id:
            return
        await self._begin()
        try:
            if await self._one("SELECT 1 FROM logs WHERE device_id=? LIMIT 1", (self.device_id,)) is not None:
                raise Conflict(f"this home is device {self.device_id} and has written sessions as that device")
            await self.conn.execute("UPDATE meta SET value=? WHERE key='device_id'", (device_id,))
        except BaseException:
            await self._rollback()
            raise
        await self._commit()
        self.device_id = device_id

    async def devices(self, sid: str) -> dict[str, int]:
        return {r[0]: r[1] for r in await self._all("SELECT device_id, last_seq FROM logs WHERE session_id=?", (sid,))}

    # ------------------------------------------------------------------ operations from other devices
    async def apply_remote(self, sid: str, logs: dict[str, RemoteLog], *, peers: list[dict] = (),
                           remote: dict | None = None, access: str | None = None, event: str = "session.synced",
                           own: dict | None = None) -> int:
        """Apply other devices' operations (all of them, in one transaction, in one hop to the database
        thread) and record how far each peer's log has been applied. Returns how many were new here.

        Operations other than messages are applied in the global order (Lamport clock, device, seq);
        messages are plain inserts that nothing else reads while applying, so they go in as one batch.
        Nothing slow may run in here (such as checking proofs): every local append waits meanwhile.
        `own` ({pushed_seq, head_rev, tree}): this device's own log as published in the store is taken in
        too (an import after `rm` or onto a restored key), and the push state continues from it, so no
        sequence number it published is used again."""
        if own is None:  # otherwise this device's own log is authoritative
            logs = {d: lg for d, lg in logs.items() if d != self.device_id}
        ops = sorted((op for lg in logs.values() for op in lg.ops), key=lambda o: o.order)
        msgs = [lg.messages for lg in logs.values()]

        def work(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            try:
                new = 0
                for op in ops:
                    cur = db.execute("INSERT OR IGNORE INTO ops(session_id, device_id, seq, lamport, kind, body,"
                                     " created_at) VALUES (?,?,?,?,?,?,?)",
                                     (sid, op.device_id, op.seq, op.lamport, op.kind, _dumps(op.body), op.created_at))
                    if cur.rowcount:
                        new += 1
                        self._apply_sync(db, op)
                max_lam, max_t = 0, 0.0
                added_tokens: int | None = 0  # None: some rows were here already, so count again
                for rows in msgs:
                    if not rows:
                        continue
                    before = db.total_changes
                    db.executemany("INSERT OR IGNORE INTO messages(session_id, chat_id, device_id, seq, lamport, role,"
                                   " content, tokens, created_at, extra) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
                    inserted = db.total_changes - before
                    new += inserted
                    if added_tokens is not None and inserted == len(rows):
                        added_tokens += sum(map(_row_charge, map(itemgetter(7), rows), map(itemgetter(9), rows)))
                    else:
                        added_tokens = None
                    max_lam = max(max_lam, max(map(itemgetter(4), rows)))
                    max_t = max(max_t, max(map(itemgetter(8), rows)))
                if db.execute("SELECT 1 FROM sessions WHERE id=?", (sid,)).fetchone() is None:
                    raise Invalid(f"the shared logs of {sid!r} do not create the session (no session.create)")
                if max_lam:
                    # every row new (the usual pull): add their tokens; a sum over the whole session
                    # would hold the write lock for tens of milliseconds on a long one
                    db.execute("UPDATE sessions SET lamport=max(lamport, ?), last_activity=max(last_activity, ?),"
                               " tokens_used=" + ("tokens_used+?" if added_tokens is not None else _RECOUNT)
                               + " WHERE id=?", (max_lam, max_t, added_tokens if added_tokens is not None else sid, sid))
                for device, lg in logs.items():
                    if len(lg):
                        db.execute("INSERT INTO logs(session_id, device_id, last_seq) VALUES (?,?,?) ON CONFLICT("
                                   "session_id, device_id) DO UPDATE SET last_seq=max(last_seq, excluded.last_seq)",
                                   (sid, device, lg.last_seq))
                if access is not None:
                    db.execute("UPDATE sessions SET access=? WHERE id=?", (access, sid))
                if remote is not None:
                    db.execute("INSERT INTO remotes(session_id, store_url, announce_pk, members_rev) VALUES (?,?,?,?) "
                               "ON CONFLICT(session_id) DO UPDATE SET store_url=excluded.store_url, "
                               "announce_pk=excluded.announce_pk, members_rev=max(members_rev, excluded.members_rev)",
                               (sid, remote["store_url"], remote["announce_pk"], remote.get("members_rev", 0)))
                    db.execute("INSERT OR IGNORE INTO sync_state(session_id) VALUES (?)", (sid,))
                if own is not None:
                    db.execute("INSERT INTO sync_state(session_id, pushed_seq, head_rev, tree) VALUES (?,?,?,?) "
                               "ON CONFLICT(session_id) DO UPDATE SET pushed_seq=excluded.pushed_seq, "
                               "head_rev=max(head_rev, excluded.head_rev), tree=excluded.tree, pending=NULL "
                               "WHERE pushed_seq < excluded.pushed_seq",
                               (sid, own["pushed_seq"], own["head_rev"], own["tree"]))
                for p in peers:
                    self._save_peer_sync(db, sid, **p)
                db.execute("COMMIT")
                return new
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

        async with self._write_lock:
            new = await self.conn._execute(work, self.conn._conn)
        chats = sorted(set().union(*(map(itemgetter(1), rows) for rows in msgs)) - {None})
        ev = {"type": event, "session": sid, "new": new, "chats": chats}
        for fn in list(self.listeners):
            fn(ev)
        return new

    @staticmethod
    def _save_peer_sync(db: sqlite3.Connection, sid: str, head_pk: bytes, device_id: str | None = None,
                        rev: int | None = None, applied_seq: int | None = None, last_error: str | None = None) -> None:
        db.execute(
            "INSERT INTO peers(session_id, head_pk, device_id, rev, applied_seq, last_error) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT(session_id, head_pk) DO UPDATE SET device_id=coalesce(excluded.device_id, device_id), "
            "rev=max(rev, excluded.rev), applied_seq=max(applied_seq, excluded.applied_seq), "
            "last_error=excluded.last_error",
            (sid, head_pk, device_id, rev or 0, applied_seq or 0, last_error))

    async def peers(self, sid: str) -> list[dict]:
        return [dict(r) for r in await self._fresh("SELECT * FROM peers WHERE session_id=? ORDER BY head_pk", (sid,))]

    async def remote(self, sid: str) -> dict | None:
        rows = await self._fresh("SELECT * FROM remotes WHERE session_id=?", (sid,))
        return dict(rows[0]) if rows else None

    async def set_remote(self, sid: str, **fields) -> None:
        sets = ", ".join(f"{k}=?" for k in fields)
        await self._write(f"UPDATE remotes SET {sets} WHERE session_id=?", (*fields.values(), sid))

    async def add_remote(self, sid: str, store_url: str | None, announce_pk: bytes) -> None:
        await self._write("INSERT OR IGNORE INTO remotes(session_id, store_url, announce_pk) VALUES (?,?,?)",
                          (sid, store_url, announce_pk))

    async def has_shared_sessions(self) -> bool:
        return await self._one("SELECT 1 FROM remotes LIMIT 1") is not None

    async def sessions_with_heads(self, pks: list[bytes]) -> list[str]:
        """Shared sessions that follow any of these heads: a member device's log head (0xed | key), or
        the session's members slot (0xed | announce key)."""
        out: set[str] = set()
        for i in range(0, len(pks), 500):
            part = pks[i:i + 500]
            marks = ",".join("?" * len(part))
            slots = [pk[1:] for pk in part if pk[:1] == b"\xed"]
            rows = await self._all(f"SELECT session_id FROM peers WHERE head_pk IN ({marks})", tuple(part))
            if slots:
                rows += await self._all(f"SELECT session_id FROM remotes WHERE announce_pk IN "
                                        f"({','.join('?' * len(slots))})", tuple(slots))
            out.update(r[0] for r in rows)
        return sorted(out)

    async def shared_sessions(self) -> list[str]:
        return [r[0] for r in await self._all("SELECT session_id FROM remotes ORDER BY session_id")]

    # ------------------------------------------------------------------ push state
    async def sync_state(self, sid: str) -> dict:
        rows = await self._fresh("SELECT * FROM sync_state WHERE session_id=?", (sid,))
        row = rows[0] if rows else None
        if row is None:
            return {"pushed_seq": 0, "head_rev": 0, "tree": None, "pending": None, "last_error": None,
                    "last_push": None}
        return dict(row)

    async def all_sync_states(self) -> dict[str, dict]:
        rows = await self._all(
            "SELECT s.id AS session_id, coalesce(l.last_seq, 0) AS last_seq, coalesce(y.pushed_seq, 0) AS pushed_seq,"
            " coalesce(y.head_rev, 0) AS head_rev, y.last_error AS last_error, y.last_push AS last_push"
            " FROM sessions s LEFT JOIN logs l ON l.session_id=s.id AND l.device_id=?"
            " LEFT JOIN sync_state y ON y.session_id=s.id ORDER BY s.id", (self.device_id,))
        return {r["session_id"]: {"pending": r["last_seq"] - r["pushed_seq"], "pushed_seq": r["pushed_seq"],
                                  "last_seq": r["last_seq"], "head_rev": r["head_rev"],
                                  "last_error": r["last_error"], "last_push": r["last_push"]} for r in rows}

    async def save_sync_state(self, sid: str, **fields) -> None:
        cols = ", ".join(f"{k}=excluded.{k}" for k in fields)
        names = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        await self._write(
            f"INSERT INTO sync_state(session_id, {names}) VALUES (?, {marks}) "
            f"ON CONFLICT(session_id) DO UPDATE SET {cols}", (sid, *fields.values()))

    async def sessions_needing_push(self) -> list[str]:
        rows = await self._all(
            "SELECT l.session_id FROM logs l LEFT JOIN sync_state y ON y.session_id=l.session_id"
            " WHERE l.device_id=? AND (l.last_seq > coalesce(y.pushed_seq, 0) OR y.pending IS NOT NULL)",
            (self.device_id,))
        return [r[0] for r in rows]


async def schema_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'") as cur:
        if await cur.fetchone() is None:
            return 0
    async with conn.execute("SELECT version FROM schema_version") as cur:
        row = await cur.fetchone()
    return row[0] if row else 0


async def migrate(conn: aiosqlite.Connection, upto: int | None = None) -> None:
    """Bring the schema up to date in place, one migration per transaction."""
    target = SCHEMA_VERSION if upto is None else upto
    current = await schema_version(conn)
    if current > SCHEMA_VERSION:
        raise RuntimeError(f"the database has schema version {current}, newer than this sessiond "
                           f"understands ({SCHEMA_VERSION}); upgrade sessiond")
    for version in range(current + 1, target + 1):
        await conn.execute("BEGIN IMMEDIATE")
        try:
            if version == 1:
                await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                await conn.execute("INSERT INTO schema_version VALUES (0)")
            for stmt in MIGRATIONS[version - 1].split(";"):
                if stmt.strip():
                    await conn.execute(stmt)
            await conn.execute("UPDATE schema_version SET version=?", (version,))
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
