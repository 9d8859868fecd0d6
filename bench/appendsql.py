"""SQLite's own share of an append: the statements `Messages.append` runs for one message with an
Idempotency-Key, raw (the stdlib sqlite3 module, no event loop, no daemon), on a database made by sessiond's
own schema, with the same pragmas as the daemon's writer. Prints JSON; run:
    python bench/appendsql.py > bench/results/appendsql.json

The load row needs daemon A's event-loop thread under 200 us per append (bench/results/profile-load.md);
this measures how much of that SQLite alone takes on this machine, so the rest can be read against it.
`k` transactions share one COMMIT, as group commit shares one among the appends of k clients that arrive
together (bench/load.py's 16 clients make ~5-7 a commit): each of the k appends goes to a session of its
own, and each slot moves to a new session every 100 messages, as the load's clients do over 1,000 sessions.

* `statements`: as the daemon runs them: the first transaction of a commit opens it (BEGIN IMMEDIATE); the
  session read (SESSION_READ) and one INSERT into the writer's view (storage/appendone.py: the message with
  the search index's pending row, the log's last seq, the session's counters, the key, by triggers), which
  needs no SAVEPOINT; then one COMMIT.
* `four_statements`: as the daemon ran them before the twenty-sixth pass: each later transaction of a commit
  a SAVEPOINT, and the message's INSERT, the log's last seq, the session's counters and the key four
  statements.
* `batched`: the same rows with one executemany per statement for the whole commit (what coalescing the
  appends of one commit into one job of SQL would save, with the reads still one per append).
* `insert_only`: the message's INSERT alone and the COMMIT: a durable row, nothing else.

Per append: the thread's CPU (us) and its write system calls (/proc/self/io `syscw`: each WAL frame is two
`pwrite`s, its header and its page). The WAL is checkpointed between rounds, outside the timed part (the
daemon does that on a thread of its own). Best and median of ROUNDS rounds (SQL_ROUNDS, 5), each of
SQL_APPENDS appends (6,000).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid

from sessiond.storage.appendone import APPEND_ONE, APPEND_ONE_SQL
from sessiond.storage.database import Database
from sessiond.storage.messages import _INSERT_ONE, KEY_INSERT, LOG_UPSERT, SESSION_READ, SESSION_UPDATE
from sessiond.storage.model import pushed_form
from sessiond.storage.sqliteconns import SECURE_DELETE, TEMP_IN_MEMORY

ROUNDS = int(os.environ.get("SQL_ROUNDS", 5))
APPENDS = int(os.environ.get("SQL_APPENDS", 6000))
SESSIONS = 1000
PER_SESSION = 100


async def _make(path: str) -> tuple[str, list[str]]:
    db = await Database.open(path)
    try:
        sids = [(await db.sessions.create({"name": f"s{i}"}))["id"] for i in range(SESSIONS)]
        await db.append_messages(sids[0], [{"role": "user", "content": "first"}], key=uuid.uuid4().hex)
        device = db.c.device_id
    finally:
        await db.close()
    return device, sids


def _writer(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",
        "PRAGMA foreign_keys=ON",
        TEMP_IN_MEMORY,
        SECURE_DELETE,
        "PRAGMA wal_autocheckpoint=0",
    ):
        conn.execute(pragma)
    conn.executescript(APPEND_ONE_SQL)
    return conn


def _writes() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("syscw:"):
                return int(line.split()[1])
    return 0


class Slots:
    """k clients, each appending PER_SESSION messages to a session before the next one."""

    def __init__(self, conn: sqlite3.Connection, device: str, sids: list[str], k: int):
        self.conn, self.device, self.sids, self.k = conn, device, sids, k
        self.next = 0
        self.slots = [self._take() for _ in range(k)]

    def _take(self) -> list:
        sid = self.sids[self.next % len(self.sids)]
        self.next += 1
        lam, seq = self.conn.execute(
            "SELECT s.lamport, coalesce((SELECT last_seq FROM logs WHERE session_id=s.id AND device_id=?), 0)"
            " FROM sessions s WHERE s.id=?",
            (self.device, sid),
        ).fetchone()
        return [sid, lam, seq, 0]

    def rows(self, t: float) -> list[tuple]:
        """One append's values for each slot: (sid, key, seq, lamport, content)."""
        out = []
        for j, slot in enumerate(self.slots):
            if slot[3] == PER_SESSION:
                slot = self.slots[j] = self._take()
            slot[1] += 1
            slot[2] += 1
            slot[3] += 1
            out.append((slot[0], uuid.uuid4().hex, slot[2], slot[1], f"message {slot[2]} " + "x" * 60))
        return out


def _commit_statements(conn: sqlite3.Connection, device: str, batch: list[tuple], t: float) -> None:
    conn.execute("BEGIN IMMEDIATE")
    for sid, key, seq, lam, content in batch:
        row = conn.execute(SESSION_READ, (device, key, None, sid, 0)).fetchall()[0]
        conn.execute(
            APPEND_ONE,
            (sid, row[2], device, seq, lam, "user", content, 20, t, None, *pushed_form(content, t), t, 20, key)
            + ("d" * 64, f"{seq} 1", t),
        )
    conn.execute("COMMIT")


def _commit_four_statements(conn: sqlite3.Connection, device: str, batch: list[tuple], t: float) -> None:
    for i, (sid, key, seq, lam, content) in enumerate(batch):
        conn.execute("BEGIN IMMEDIATE" if i == 0 else "SAVEPOINT tx")
        row = conn.execute(SESSION_READ, (device, key, None, sid, 0)).fetchall()[0]
        conn.execute(
            _INSERT_ONE, (sid, row[2], device, seq, lam, "user", content, 20, t, None, *pushed_form(content, t))
        )
        conn.execute(LOG_UPSERT, (sid, device, seq))
        conn.execute(SESSION_UPDATE, (lam, t, 20, sid))
        conn.execute(KEY_INSERT, (sid, key, "d" * 64, f"{seq} 1", t))
        if i:
            conn.execute("RELEASE tx")
    conn.execute("COMMIT")


def _commit_batched(conn: sqlite3.Connection, device: str, batch: list[tuple], t: float) -> None:
    conn.execute("BEGIN IMMEDIATE")
    chats = [conn.execute(SESSION_READ, (device, key, None, sid, 0)).fetchall()[0][2] for sid, key, *_ in batch]
    conn.executemany(
        _INSERT_ONE,
        [
            (sid, chat, device, seq, lam, "user", content, 20, t, None, *pushed_form(content, t))
            for (sid, _, seq, lam, content), chat in zip(batch, chats)
        ],
    )
    conn.executemany(LOG_UPSERT, [(sid, device, seq) for sid, _, seq, _, _ in batch])
    conn.executemany(SESSION_UPDATE, [(lam, t, 20, sid) for sid, _, _, lam, _ in batch])
    conn.executemany(KEY_INSERT, [(sid, key, "d" * 64, f"{seq} 1", t) for sid, key, seq, _, _ in batch])
    conn.execute("COMMIT")


def _commit_insert_only(conn: sqlite3.Connection, device: str, batch: list[tuple], t: float) -> None:
    conn.execute("BEGIN IMMEDIATE")
    for sid, _, seq, lam, content in batch:
        conn.execute(
            _INSERT_ONE, (sid, "main", device, seq, lam, "user", content, 20, t, None, *pushed_form(content, t))
        )
    conn.execute("COMMIT")


MODES = {
    "statements": _commit_statements,
    "four_statements": _commit_four_statements,
    "batched": _commit_batched,
    "insert_only": _commit_insert_only,
}


def measure(template: str, device: str, sids: list[str], mode: str, k: int) -> dict:
    rounds = []
    with tempfile.TemporaryDirectory(prefix="sd-appendsql-") as d:
        path = os.path.join(d, "s.db")
        shutil.copy(template, path)
        conn = _writer(path)
        slots = Slots(conn, device, sids, k)
        commit = MODES[mode]
        commits = max(1, APPENDS // k)
        for _ in range(ROUNDS):
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            w0, c0 = _writes(), time.thread_time()
            for _ in range(commits):
                t = time.time()
                commit(conn, device, slots.rows(t), t)
            cpu, writes = time.thread_time() - c0, _writes() - w0
            n = commits * k
            rounds.append((1e6 * cpu / n, writes / n))
        conn.close()
    cpu = sorted(r[0] for r in rounds)
    return {
        "cpu_us_per_append_best": round(cpu[0], 1),
        "cpu_us_per_append_median": round(statistics.median(cpu), 1),
        "write_syscalls_per_append": round(statistics.median(r[1] for r in rounds), 2),
    }


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="sd-appendsql-t-") as d:
        template = os.path.join(d, "template.db")
        device, sids = asyncio.run(_make(template))
        out: dict = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()},"
            f" SQLite {sqlite3.sqlite_version}",
            "load_average_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "appends_per_round": APPENDS,
            "rounds": ROUNDS,
            "results": {},
        }
        for mode in MODES:
            for k in (1, 6, 16):
                out["results"][f"{mode}, {k} a commit"] = measure(template, device, sids, mode, k)
        out["load_average_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
