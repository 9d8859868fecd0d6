"""A page of the sessions with a tag (`sessiond ls --tag`, GET /v1/sessions?tag=) read every session's tags (a
json_each of each) until it found a page: a rare tag read them all. The tags are kept in a table of their own by
trigger (migration 26, `session_tags`): the list seeks the tag's rows in the order of the ids, and finds what the
json_each filter found, whatever wrote the tags."""

from __future__ import annotations

import random

from sessiond.storage.model import Op, RemoteLog

REMOTE = "f0f0f0f0f0f0f0f0"


async def _filtered(db, tag: str, after: str | None, limit: int) -> list[str]:
    """The page as the json_each filter found it."""
    rows = await db.read_all(
        "SELECT s.id FROM sessions s LEFT JOIN session_texts t ON t.session_id=s.id WHERE NOT s.importing"
        " AND EXISTS (SELECT 1 FROM json_each(t.tags) WHERE value=?) AND s.id>? ORDER BY s.id LIMIT ?",
        (tag, after or "", limit),
    )
    return [r[0] for r in rows]


async def _pages(db, tag: str, limit: int) -> list[str]:
    out: list[str] = []
    while True:
        page = [s["id"] for s in await db.list_sessions(tag=tag, limit=limit, after=out[-1] if out else None)]
        assert page == await _filtered(db, tag, out[-1] if out else None, limit), tag
        out += page
        if len(page) < limit:
            return out


async def test_a_page_of_a_tag_seeks_its_rows(db):
    """Structural: the list's statement (SQLite's trace) reads the tag's rows by its index and looks each session up
    by its id; it scanned the sessions."""
    for i in range(30):
        await db.create_session({"name": f"s{i}", "tags": ["common"] + (["rare"] if i % 10 == 3 else [])})
    statements: list[str] = []
    for conn in (db.c._writer, db.c._reader):
        conn.set_trace_callback(statements.append)
    try:
        got = await db.list_sessions(tag="rare", limit=2)
    finally:
        for conn in (db.c._writer, db.c._reader):
            conn.set_trace_callback(None)
    assert [s["name"] for s in got] == ["s3", "s13"]
    [sql] = [s for s in statements if "FROM sessions" in s or "sessions s" in s]
    plan = [r[3] for r in await db.read_all("EXPLAIN QUERY PLAN " + sql)]
    assert not [p for p in plan if p.startswith("SCAN")], plan
    assert any(p.startswith("SEARCH g") and "(tag=?" in p for p in plan), plan  # (g: session_tags)
    assert not any("TEMP B-TREE" in p for p in plan), plan  # (in the order of the ids, no sort)


async def test_the_tags_kept_are_the_filters_through_every_writer(db):
    """Sessions made with tags (repeated, not text), their tags changed here and by another device's operation,
    removed, sessions deleted: every page of every tag is the json_each filter's."""
    rnd = random.Random(5)
    tags = ["a", "b", "c", "rare"]
    sids = []
    for i in range(40):
        pick = rnd.sample(tags, rnd.randint(0, 3))
        spec = {"name": f"s{i}"}
        if pick or i % 2:
            spec["tags"] = pick + pick[:1]
        sids.append((await db.create_session(spec))["id"])
    for sid in rnd.sample(sids, 10):
        await db.update_session(sid, {"tags": rnd.sample(tags, rnd.randint(0, 2))})
    for sid in rnd.sample(sids, 5):
        lamport = (await db.read_one("SELECT lamport FROM sessions WHERE id=?", (sid,)))[0] + 1
        op = Op(sid, REMOTE, 1, lamport, "session.update", {"tags": ["rare", "b"]}, 0.0)
        await db.apply_remote(sid, {REMOTE: RemoteLog(REMOTE, [], [op], 1)})
        assert (await db.get_session(sid))["tags"] == ["rare", "b"]  # (the premise: the operation applied)
    for sid in rnd.sample(sids, 6):
        await db.delete_session(sid)
    for tag in [*tags, "none"]:
        for limit in (1, 3, 50):
            await _pages(db, tag, limit)
    assert await _pages(db, "rare", 50)  # (what it tests: a tag on some sessions)


async def test_the_migration_lists_the_tags_already_here(tmp_path):
    """Migration 26 fills the table with the tags of the sessions of a database of schema 25."""
    from sessiond.storage.database import Database

    path = str(tmp_path / "db.sqlite")
    old = await Database.open(path, upto=25)
    try:
        for i in range(12):
            await old.create_session({"name": f"s{i}", "tags": ["x", "y"][: i % 3]})
    finally:
        await old.close()
    db = await Database.open(path)
    try:
        assert len(await _pages(db, "x", 3)) == 8 and len(await _pages(db, "y", 50)) == 4
    finally:
        await db.close()
