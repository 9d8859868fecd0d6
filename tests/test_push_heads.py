"""Each message's content head and time in milliseconds stored with it (schema migration 10), for the push's
read (storage/logrun.py): written by this device's appends, absent from the rows of a database made before,
cleared when a content or time is changed in place; the read gives the same contents, item for item, and
the same times, whichever of its rows carry them."""

from __future__ import annotations

import random
import sqlite3

from oldcode import old_storage
from sessiond.storage import logrun, search
from sessiond.storage.database import Database
from sessiond.storage.model import text_head
from sessiond.storage.schema import MIGRATIONS
from sessiond.storage.search import insert_messages

# contents at each edge of the head widths (1, 2, 3 and 5 bytes), some of two UTF-8 bytes a character
SIZES = [0, 1, 23, 24, 255, 256, 257, 65535, 65536, 70000, 5, 300, 30]
CONTENTS = ["\u00e9" * (n // 2) + "x" * (n % 2) if i % 2 else "y" * n for i, n in enumerate(SIZES)]
# times: now-ish with microseconds, ties at half a millisecond, 0, and outside what the read rounds itself
TIMES = [1764680000.0 + random.Random(i).random() for i in range(8)] + [0.0, 0.0005, 1.0025, -1.0, 5e12]


def items(contents: list[str]) -> bytes:
    """The contents as the CBOR text items a page stores, back to back."""
    return b"".join(text_head(len(c.encode())) + c.encode() for c in contents)


def column(path: str, sid: str, name: str) -> list:
    conn = sqlite3.connect(path)
    try:
        return [v for (v,) in conn.execute(f"SELECT {name} FROM messages WHERE session_id=? ORDER BY seq", (sid,))]
    finally:
        conn.close()


async def test_appends_store_heads_and_times_and_the_read_is_the_same_with_or_without_them(tmp_path):
    path = str(tmp_path / "sessions.db")
    old = await old_storage().Database.open(path, upto=9)
    sid = (await old.create_session({}))["id"]
    dev = old.device_id
    base = await old.last_seq(sid)  # the session's own operations
    n_old = len(CONTENTS)
    # messages as sessiond wrote them at schema 9 (rows, without the two values), seqs base+1..base+13
    rows = [
        (sid, "main", dev, base + i, base + i, "user", c, None, TIMES[i % len(TIMES)], None)
        for i, c in enumerate(CONTENTS, 1)
    ]
    async with old.c.transaction() as tx:
        await insert_messages(tx, rows)
        await tx.execute("UPDATE logs SET last_seq=? WHERE session_id=? AND device_id=?", (base + n_old, sid, dev))
        await tx.execute("UPDATE sessions SET lamport=? WHERE id=?", (base + n_old, sid))
    await old.close()

    db = await Database.open(path)  # migrated: nothing rewritten, the old rows have neither
    try:
        assert column(path, sid, "content_head") == column(path, sid, "created_ms") == [None] * n_old
        await db.append_messages(sid, [{"role": "user", "content": CONTENTS[9]}])  # one: its own statement
        await db.append_messages(sid, [{"role": "user", "content": c} for c in CONTENTS])  # several at once
        # and rows written as the appends write them, at the times above
        more = [
            (sid, "main", dev, base + 2 * n_old + 1 + i, base + 2 * n_old + 1 + i, "user", "t", None, t, None)
            for i, t in enumerate(TIMES, 1)
        ]
        async with db.c.transaction() as tx:
            await insert_messages(tx, more, pushed=True)
        contents = CONTENTS + CONTENTS[9:10] + CONTENTS + ["t"] * len(TIMES)
        created = column(path, sid, "created_at")
        heads = column(path, sid, "content_head")
        assert heads == [None] * n_old + [text_head(len(c.encode())) for c in contents[n_old:]]
        in_range = [round(t * 1000) if 0 <= t <= 4.5e12 else None for t in created]
        assert column(path, sid, "created_ms") == [None] * n_old + in_range[n_old:]
        n = len(contents)
        for after, upto in ((0, n), (0, 13), (13, n), (5, 20), (14, 15), (20, n)):  # old rows, new ones, both
            run = await db.log_run(sid, dev, base + after, base + upto)
            assert run.sizes == [len(c.encode()) for c in contents[after:upto]], (after, upto)
            assert bytes(run.blob) == items(contents[after:upto]), (after, upto)
            assert run.times == [round(t * 1000) for t in created[after:upto]], (after, upto)
    finally:
        await db.close()


async def test_a_content_or_time_changed_in_place_loses_both(tmp_path):
    path = str(tmp_path / "sessions.db")
    db = await Database.open(path)
    try:
        sid = (await db.create_session({}))["id"]
        stored = await db.append_messages(sid, [{"role": "user", "content": c} for c in ("short", "x" * 300, "z")])
        (t,) = set(column(path, sid, "created_at"))
        async with db.c.transaction() as tx:
            where = " WHERE session_id=? AND seq=?"
            await tx.execute("UPDATE messages SET content=?" + where, ("y" * 30, sid, stored[0]["seq"]))
            await tx.execute("UPDATE messages SET role='assistant'" + where, (sid, stored[1]["seq"]))
            await tx.execute("UPDATE messages SET created_at=7.0" + where, (sid, stored[2]["seq"]))
        assert column(path, sid, "content_head") == [None, text_head(300), None]
        assert column(path, sid, "created_ms") == [None, round(t * 1000), None]
        run = await db.log_run(sid, db.device_id, stored[0]["seq"] - 1)
        assert bytes(run.blob) == items(["y" * 30, "x" * 300, "z"])
        assert run.times == [round(t * 1000)] * 2 + [7000]
    finally:
        await db.close()


def test_the_read_takes_stored_heads_and_times_as_they_are():
    """What the statement puts before each content but the first is its stored head when it has one, and
    each time is the stored one when there is one: read, not worked out again (which would hide a stale
    one)."""
    conn = sqlite3.connect(":memory:")
    conn.executescript(
        "CREATE TABLE messages (session_id, chat_id, device_id, seq, lamport, role, content,"
        " tokens, created_at, extra, content_head, created_ms)"
    )
    conn.executescript("CREATE TABLE ops (session_id, device_id, seq, lamport, kind, body, created_at)")
    for seq, head, ms in ((1, b"\x61", 5), (2, b"<2>", None), (3, None, 6)):
        conn.execute(
            "INSERT INTO messages VALUES ('s', 'main', 'd', ?, ?, 'user', 'a', NULL, 1.0, NULL, ?, ?)",
            (seq, seq, head, ms),
        )
    run = logrun.read_run(conn, "s", "d", 0, 3)
    assert bytes(run.blob) == b"\x61a<2>a\x61a"
    assert run.times == [5, 1000, 6]


async def test_an_append_of_many_stays_within_an_old_sqlites_parameters(monkeypatch):
    """Before SQLite 3.32 a statement takes at most 999 parameters: 99 rows of the ten message columns, but
    only 83 of the twelve an append writes."""

    class Tx:
        def __init__(self):
            self.conn = sqlite3.connect(":memory:")
            self.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
            for migration in MIGRATIONS:
                self.conn.executescript(migration)

        async def execute(self, sql, args=()):
            return self.conn.execute(sql, args).rowcount

    monkeypatch.setattr(search, "MAX_VARIABLES", 999, raising=False)
    monkeypatch.setattr(search, "ROWS_PER_INSERT", 99)
    tx = Tx()
    for pushed in (False, True):
        rows = [("s", "main", "d" + str(pushed), i, i, "user", "c", None, 1.0, None) for i in range(1, 201)]
        assert await insert_messages(tx, rows, pushed=pushed) == 200  # type: ignore[arg-type]


def test_a_run_of_one_time_is_read_and_encoded_as_one_value_repeated():
    """The messages of one append share its time (an import appends 5,000 at once): the read takes such
    a column as one value repeated, without a number made apiece, and a page writes it as one item
    repeated; both exactly as the general path (any other column of numbers, a lone null, a value that
    only looks the same in part, falls through to it)."""
    import cbor2

    from sessiond.sync.pagecut import _ints

    for joined, n, want in (
        ("1764000000000,1764000000000,1764000000000", 3, [1764000000000] * 3),
        ("7", 1, [7]),
        ("null,null", 2, [None, None]),
        ("5,55,5", 3, None),
        ("55,5,5", 3, None),
        ("5,5", 3, None),
        ("15,15,5", 3, None),
    ):
        assert logrun._one_value(joined, n) == want, joined
    for values in ([1764000000000] * 1500, [3, 3, 4], [4, 3, 3], [], [5], list(range(30)), [2**40] * 3):
        assert _ints(values) == cbor2.dumps(values), values

    conn = sqlite3.connect(":memory:")
    for migration in MIGRATIONS:
        conn.executescript(migration)
    for seq in range(1, 9):
        conn.execute(
            "INSERT INTO messages(session_id, chat_id, device_id, seq, lamport, role, content, created_at,"
            " created_ms) VALUES ('s', 'main', 'd', ?, ?, 'user', 'a', 1764000000.5, ?)",
            (seq, seq, 1764000000500 if seq != 8 else None),
        )
    assert logrun.read_run(conn, "s", "d", 0, 7).times == [1764000000500] * 7
    assert logrun.read_run(conn, "s", "d", 0, 8).times == [1764000000500] * 8  # the last one worked out
    conn.execute("UPDATE messages SET created_ms=NULL, created_at=-1.0 WHERE seq=3")
    assert logrun.read_run(conn, "s", "d", 0, 8).times == [1764000000500] * 2 + [-1000] + [1764000000500] * 5
