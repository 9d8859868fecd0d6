"""Migration 38: what migration 35 (0.39.0) wrote on an SQLite that drops a JSON function's subtype through a subquery
(3.54.1, apsw's here; a user's Python may bring it), mended. There 35 set the counts it kept of a `usage` or
`response` as a string holding the object's text (`"usage": "{\\"completion_tokens\\":3}"`): the row's prompt tokens
out of the quota's recount at the next pull, `verify` finding it unlike the peer's page, `import-file` refusing its
export. A home made so (35 run by apsw's SQLite, a pull's recount after it), then 38 run by Python's sqlite3 (the
daemon's open) or by apsw: every row as a pull keeps it, the quota as a pull recounts it. A home 35 did not damage
(Debian's 3.40.1, CI's) is left as it was, row for row."""

from __future__ import annotations

import json
import sqlite3

import apsw
import pytest

from sessiond.storage.database import Database
from sessiond.storage.migrations import MIGRATIONS, SCHEMA_VERSION
from sessiond.storage.model import RECOUNT_SQL, charge
from sessiond.storage.pulledextra import pulled_extra
from test_migration_30 import _version
from test_migration_35 import EXTRAS

# the pulled rows: every kind of test_migration_35's, and answers whose counts 35 kept of a usage and a response with
# another field, both (set as strings on 3.54.1: the answer's times out of its chat's statistics too)
EXTRAS = [
    *EXTRAS,
    {"usage": {"prompt_tokens": 9, "cached": 1}, "response": {"first_token_ms": 80, "total_ms": 90, "ttfb": 1}},
    {"response": {"total_ms": 300, "x": None}, "model": "m"},
]
TOKENS = [2, 0, 1, None, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5]
OTHER = {"model": "m", "usage": {"prompt_tokens": 40, "completion_tokens": 2}}  # the other session's, kept as it is


def _by_apsw(path: str, n: int) -> None:
    """Migration `n` run on the database at `path` by apsw's SQLite (3.54.1 or later), as storage/schema.py runs it."""
    db = apsw.Connection(path)
    try:
        with db:
            db.execute(MIGRATIONS[n - 1])
            db.execute("UPDATE schema_version SET version=?", (n,))
    finally:
        db.close()


async def _home(path: str, damaged: bool) -> tuple[str, str]:
    """A home at schema 37 holding pulled rows (EXTRAS) that 35 migrated: by apsw's SQLite (`damaged`) or by
    sqlite3's; then a pull's recount of the quota. Its sessions' ids (the pulled rows', another's)."""
    assert len(TOKENS) == len(EXTRAS)
    old = await Database.open(path)  # (its appends are this version's: the schema set back to 34 after them)
    try:
        sid = (await old.create_session({"name": "pulled before"}))["id"]
        other = (await old.create_session({"name": "not pulled"}))["id"]
        await old.append_messages(sid, [{"role": "assistant", "content": f"a{i}"} for i in range(len(EXTRAS))])
        await old.append_messages(other, [{"role": "assistant", "content": "b", "tokens": 7, **OTHER}], answer=True)
    finally:
        await old.close()
    conn = sqlite3.connect(path)
    with conn:  # as a pull of 0.37.0 stored another device's messages; at schema 34
        for i, e in enumerate(EXTRAS):
            conn.execute("UPDATE messages SET extra=?, tokens=? WHERE content=?", (json.dumps(e), TOKENS[i], f"a{i}"))
        conn.execute("UPDATE schema_version SET version=34")
    conn.close()
    if damaged:
        assert tuple(map(int, apsw.sqlite_lib_version().split("."))) >= (3, 54, 1), apsw.sqlite_lib_version()
        _by_apsw(path, 35)
    db = await Database.open(path, upto=35 if damaged else 37)
    await db.close()
    conn = sqlite3.connect(path)
    with conn:  # a pull's recount (storage/applyremote.py)
        conn.execute(f"UPDATE sessions SET tokens_used={RECOUNT_SQL} WHERE id=?", (sid, sid))
    conn.close()
    db = await Database.open(path, upto=37)
    await db.close()
    assert _version(path) == 37
    return sid, other


def _rows(path: str, sid: str) -> tuple[dict, int]:
    conn = sqlite3.connect(path)
    try:
        rows = dict(conn.execute("SELECT content, extra FROM messages WHERE session_id=?", (sid,)).fetchall())
        [(used,)] = conn.execute("SELECT tokens_used FROM sessions WHERE id=?", (sid,)).fetchall()
    finally:
        conn.close()
    return {k: json.loads(v) if v is not None else None for k, v in rows.items()}, used


def _kept(i: int) -> object:
    return pulled_extra(EXTRAS[i])


def _quota() -> int:
    """The pulled rows' quota as a pull counts it (charge() of each row as a pull keeps it)."""
    return sum(charge({"tokens": t, **(_kept(i) or {})}) for i, t in enumerate(TOKENS))


def _times(stats: dict) -> tuple:
    [chat] = stats["per_chat"]
    return chat["answers"], chat["avg_first_token_seconds"], chat["avg_answer_seconds"]


def _times_kept() -> tuple:
    """The pulled rows' answer times in their chat's statistics, as a pull keeps the rows."""
    times = [(_kept(i) or {}).get("response", {}) for i in range(len(EXTRAS))]
    firsts = [t["first_token_ms"] for t in times if "first_token_ms" in t]
    totals = [t["total_ms"] for t in times if "total_ms" in t]
    return len(totals), round(sum(firsts) / len(firsts) / 1000, 3), round(sum(totals) / len(totals) / 1000, 3)


async def _migrate(path: str, by: str) -> None:
    if by == "apsw":
        _by_apsw(path, 38)
    db = await Database.open(path)
    await db.close()
    assert _version(path) == SCHEMA_VERSION


@pytest.mark.parametrize("by", ["sqlite3", "apsw"])
async def test_rows_35_wrote_as_strings_on_sqlite_3_54_1_read_as_a_pull_keeps_them(tmp_path, by):
    assert SCHEMA_VERSION >= 38
    path = str(tmp_path / "sessions.db")
    sid, other = await _home(path, damaged=True)
    rows, used = _rows(path, sid)
    db = await Database.open(path, upto=37)  # (the chat's walk kept as far as it went, over the damaged rows)
    try:
        damaged_stats = _times(await db.stats(sid))
    finally:
        await db.close()
    # the damage as 3.54.1 made it (the SQLite apsw brings: were it to keep the subtype, this home is no longer made so)
    assert isinstance(rows["a0"]["usage"], str), rows["a0"]
    assert used < _quota(), (used, _quota())
    assert damaged_stats != _times_kept(), damaged_stats
    others = _rows(path, other)
    await _migrate(path, by)
    rows, used = _rows(path, sid)
    for i in range(len(EXTRAS)):
        assert rows[f"a{i}"] == _kept(i), (i, rows[f"a{i}"], _kept(i))
    assert used == _quota()
    db = await Database.open(path)
    try:
        assert _times(await db.stats(sid)) == _times_kept()
    finally:
        await db.close()
    assert _rows(path, other) == others == ({"b": OTHER}, 7 + 40)


@pytest.mark.parametrize("by", ["sqlite3", "apsw"])
async def test_a_home_35_did_not_damage_is_left_as_it_was(tmp_path, by):
    path = str(tmp_path / "sessions.db")
    sid, _ = await _home(path, damaged=False)
    rows, used = _rows(path, sid)
    assert rows == {f"a{i}": _kept(i) for i in range(len(EXTRAS))} and used == _quota()
    conn = sqlite3.connect(path)
    before = [r for r in conn.iterdump() if "schema_version" not in r]
    conn.close()
    await _migrate(path, by)
    conn = sqlite3.connect(path)
    after = [r for r in conn.iterdump() if "schema_version" not in r]
    conn.close()
    assert after == before
