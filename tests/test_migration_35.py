"""Migration 35: the extra fields of the message rows a pull stored before the pull checked them, as a pull keeps them
now (storage/pulledextra.py). sessiond 0.38.0 drops a field naming one of the message's own (`content`, `role`,
`id`...) as a pull reads it, and 0.39.0 an answer field the API would not take, but the rows pulled before kept them:
a message with two contents in its row, carried on wherever the row is read whole (a frozen log this device builds
again from its database puts back the forged `content`: its pages are read from the rows, storage/logrun.py), and a
`model` of 5 or an `interrupted` of "yes" that `export` writes into a file `import-file` refuses. Migrated once, such a
row reads as a pull stores it now; a row a pull would keep as it is is not written."""

from __future__ import annotations

import json
import sqlite3

from sessiond.storage.database import Database
from sessiond.storage.migrations import MIGRATIONS, SCHEMA_VERSION
from sessiond.storage.pulledextra import pulled_extra
from test_migration_30 import _version

FORGED = {"content": "forged", "role": "system", "id": "x-1", "tokens": "9", "seq": 2, "lamport": None}
BAD = {
    "usage": {"prompt_tokens": "500", "completion_tokens": 3, "cached_tokens": 9},
    "response": {"first_token_ms": True, "total_ms": 2**41},
    "interrupted": "yes",
    "tool_calls_dropped": [],
    "model": 5,
    "provider": "p" * 201,
    "error": None,
}
# every kind of field a row's extra holds, good and bad, with what a pull keeps of it
EXTRAS = [
    {**FORGED, **BAD, "metadata": {"content": 1}, "a_newer_field": [1, {"b": True}], "name": "n"},
    {"model": "m", "provider": "p", "usage": {"prompt_tokens": 10, "completion_tokens": 27}, "interrupted": False},
    {"response": {"first_token_ms": 5, "total_ms": 7}, "error": "e" * 2000},
    {"response": {"first_token_ms": -1, "other": 3}, "usage": [], "interrupted": True},
    {"usage": {}, "response": "fast", "error": "e" * 2001, "model": None},
    {"usage": {"prompt_tokens": 1.5, "completion_tokens": 2**40}, "content": "x"},
    {"content": "only"},
    {"tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}], "chat": "c"},
    {"metadata": {"usage": "x"}, "part_notes": [0]},
    # the fields kept of a row written, each as it was: a number past SQLite's integers, or a fraction of 17 digits
    # (was: the row built again from json_each's SQL values, 2**64 - 1 made 1.84467440737096e+19 and the fraction
    # 0.3, another value than the one the peer's page signed: the row's page encoded again for verify or a frozen log
    # differed from the store's)
    {"content": "x", "big": 2**64 - 1, "f": 0.30000000000000004, "o": {"f": 0.1}, "n": None, "t": True},
    {"model": 5, "fraction": 1.0000000000000002, "small": -(2**63) - 1, "s": 'a"\\\u2028'},
    # a text holding a NUL, counted whole (was: SQLite's length() stopped at the NUL, a model of 302 characters kept)
    {"model": "a\0" + "x" * 300, "provider": "\0" * 200, "error": "\\u0000" + "e" * 1995, "content": "\0"},
]


def test_the_migration_keeps_what_a_pull_keeps():
    """The migration's SQL is frozen (a migration is never edited); what a pull keeps is the code's
    (storage/pulledextra.py). Every kind of field, kept or dropped the same; a row that holds none to drop is not
    written (no trigger of its row fires: its search text, its chat's statistics' walk kept)."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE messages (n INTEGER, extra TEXT)")
    rows = [json.dumps(e) for e in EXTRAS] + [None, "not json", "[1, 2]"]
    db.executemany("INSERT INTO messages VALUES (?, ?)", list(enumerate(rows)))
    db.execute("CREATE TABLE written (n INTEGER)")
    db.execute("CREATE TRIGGER w AFTER UPDATE OF extra ON messages BEGIN INSERT INTO written VALUES (new.n); END")
    db.executescript(MIGRATIONS[34])
    got = dict(db.execute("SELECT n, extra FROM messages").fetchall())
    for i, e in enumerate(EXTRAS):
        assert (json.loads(got[i]) if got[i] is not None else None) == pulled_extra(e), (i, got[i])
    assert [got[len(EXTRAS) + i] for i in range(3)] == [None, "not json", "[1, 2]"]
    written = {n for (n,) in db.execute("SELECT n FROM written")}
    assert written == {i for i, e in enumerate(EXTRAS) if pulled_extra(e) != e}, written


def test_the_migration_and_38_keep_what_a_pull_keeps_on_a_newer_sqlite():
    """The same on the SQLite apsw brings (3.54.1 or later), not only on the one Python's sqlite3 here was built with
    (Debian's 3.40.1; a user's Python may bring a newer one), with migration 38 after it. 35 rebuilt the counts kept of
    a `usage` or `response` as an object passed to json_set through a scalar subquery, which SQLite does not promise
    carries the JSON subtype: 3.54.1 drops it, and the object was set as a string holding its text (`"usage":
    "{...}"`): its prompt tokens no longer counted by a quota's recount, and `import-file` refused its export. 35 is
    released (0.39.0), never edited: 38 mends what it so wrote (tests/test_migration_38.py: in a home)."""
    import apsw

    # (where the subtype is dropped: pyproject.toml's pin)
    assert tuple(map(int, apsw.sqlite_lib_version().split("."))) >= (3, 54, 1), apsw.sqlite_lib_version()
    db = apsw.Connection(":memory:")
    db.execute("CREATE TABLE messages (n INTEGER, session_id TEXT, tokens INTEGER, extra TEXT)")
    db.execute("CREATE TABLE sessions (id TEXT, tokens_used INTEGER)")
    for i, e in enumerate(EXTRAS):
        db.execute("INSERT INTO messages VALUES (?, 's', NULL, ?)", (i, json.dumps(e)))
    db.execute(MIGRATIONS[34])
    db.execute(MIGRATIONS[37])
    got = dict(db.execute("SELECT n, extra FROM messages"))
    for i, e in enumerate(EXTRAS):
        assert (json.loads(got[i]) if got[i] is not None else None) == pulled_extra(e), (i, got[i])


async def test_rows_pulled_before_read_as_a_pull_keeps_them_after_the_upgrade(tmp_path):
    assert SCHEMA_VERSION >= 35
    path = str(tmp_path / "sessions.db")
    old = await Database.open(path)
    try:
        sid = (await old.create_session({"name": "pulled before"}))["id"]
        await old.append_messages(sid, [{"role": "assistant", "content": "said", "model": "m"}], answer=True)
    finally:
        await old.close()
    conn = sqlite3.connect(path)
    with conn:  # as a pull of 0.37.0 stored another device's message; at schema 34
        conn.execute("UPDATE messages SET extra=?", (json.dumps({**FORGED, **BAD, "metadata": {"a": 1}}),))
        conn.execute("UPDATE schema_version SET version=34")
    conn.close()
    db = await Database.open(path)
    try:
        [m] = await db.list_messages(sid)
        [(extra,)] = await db.c.committed.fetchall("SELECT extra FROM messages WHERE session_id=?", (sid,))
    finally:
        await db.close()
    assert _version(path) == SCHEMA_VERSION
    # main: the row's extra as it was, the forged content among it
    assert json.loads(extra) == {"usage": {"completion_tokens": 3}, "metadata": {"a": 1}}, extra
    assert (m["content"], m["role"], m.get("model"), m.get("interrupted")) == ("said", "assistant", None, None), m
