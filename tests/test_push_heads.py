"""Each message's content head stored with it (schema migration 10), for the push's read (storage/logrun.py):
written by this device's appends, absent from the rows of a database made before, cleared when a content is
changed in place; the read gives the same contents, item for item, whichever of its rows carry a head."""

from __future__ import annotations

import sqlite3

from sessiond.storage import logrun
from sessiond.storage.database import Database
from sessiond.storage.model import text_head
from sessiond.storage.search import insert_messages

# contents at each edge of the head widths (1, 2, 3 and 5 bytes), some of two UTF-8 bytes a character
SIZES = [0, 1, 23, 24, 255, 256, 257, 65535, 65536, 70000, 5, 300, 30]
CONTENTS = ["\u00e9" * (n // 2) + "x" * (n % 2) if i % 2 else "y" * n for i, n in enumerate(SIZES)]


def items(contents: list[str]) -> bytes:
    """The contents as the CBOR text items a page stores, back to back."""
    return b"".join(text_head(len(c.encode())) + c.encode() for c in contents)


def heads(path: str, sid: str) -> list[bytes | None]:
    conn = sqlite3.connect(path)
    try:
        return [h for (h,) in conn.execute("SELECT content_head FROM messages WHERE session_id=? ORDER BY seq", (sid,))]
    finally:
        conn.close()


async def test_appends_store_the_heads_and_the_read_is_the_same_with_or_without_them(tmp_path):
    path = str(tmp_path / "sessions.db")
    old = await Database.open(path, upto=9)
    sid = (await old.create_session({}))["id"]
    dev = old.device_id
    base = await old.last_seq(sid)  # the session's own operations
    # messages as sessiond wrote them at schema 9 (rows, no head), seqs base+1..base+13
    rows = [(sid, "main", dev, base + i, base + i, "user", c, None, 1.0, None) for i, c in enumerate(CONTENTS, 1)]
    async with old.c.transaction() as tx:
        await insert_messages(tx, rows)
        await tx.execute("UPDATE logs SET last_seq=? WHERE session_id=? AND device_id=?", (base + len(rows), sid, dev))
        await tx.execute("UPDATE sessions SET lamport=? WHERE id=?", (base + len(rows), sid))
    await old.close()

    db = await Database.open(path)  # migrated: nothing rewritten, the old rows have no head
    try:
        assert heads(path, sid) == [None] * len(CONTENTS)
        await db.append_messages(sid, [{"role": "user", "content": CONTENTS[9]}])  # one: its own statement
        await db.append_messages(sid, [{"role": "user", "content": c} for c in CONTENTS])  # several at once
        stored = CONTENTS + CONTENTS[9:10] + CONTENTS
        assert heads(path, sid) == [None] * len(CONTENTS) + [text_head(len(c.encode())) for c in stored[13:]]
        n = len(stored)
        for after, upto in ((0, n), (0, 13), (13, n), (5, 20), (14, 15)):  # old rows, new ones, both
            run = await db.log_run(sid, dev, base + after, base + upto)
            assert run.sizes == [len(c.encode()) for c in stored[after:upto]], (after, upto)
            assert bytes(run.blob) == items(stored[after:upto]), (after, upto)
    finally:
        await db.close()


async def test_a_content_changed_in_place_loses_its_head(tmp_path):
    path = str(tmp_path / "sessions.db")
    db = await Database.open(path)
    try:
        sid = (await db.create_session({}))["id"]
        stored = await db.append_messages(sid, [{"role": "user", "content": c} for c in ("short", "x" * 300)])
        async with db.c.transaction() as tx:
            where = " WHERE session_id=? AND seq=?"
            await tx.execute("UPDATE messages SET content=?" + where, ("y" * 30, sid, stored[0]["seq"]))
            await tx.execute("UPDATE messages SET role='assistant'" + where, (sid, stored[1]["seq"]))
        assert heads(path, sid) == [None, text_head(300)]
        run = await db.log_run(sid, db.device_id, stored[0]["seq"] - 1)
        assert bytes(run.blob) == items(["y" * 30, "x" * 300])
    finally:
        await db.close()


def test_the_read_takes_a_stored_head_as_it_is():
    """What the statement puts before each content but the first is its stored head when it has one: so
    the heads are read, not worked out again (which would hide a stale one)."""
    conn = sqlite3.connect(":memory:")
    conn.executescript(
        "CREATE TABLE messages (session_id, chat_id, device_id, seq, lamport, role, content,"
        " tokens, created_at, extra, content_head)"
    )
    conn.executescript("CREATE TABLE ops (session_id, device_id, seq, lamport, kind, body, created_at)")
    for seq, head in ((1, b"\x61"), (2, b"<2>"), (3, None)):
        conn.execute(
            "INSERT INTO messages VALUES ('s', 'main', 'd', ?, ?, 'user', 'a', NULL, 1.0, NULL, ?)", (seq, seq, head)
        )
    run = logrun.read_run(conn, "s", "d", 0, 3)
    assert bytes(run.blob) == b"\x61a<2>a\x61a"
