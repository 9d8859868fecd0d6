"""Search: the FTS5 index in step with every write to the messages table (in-process, on a real database
file), and `sessiond search` / GET /v1/search end to end (two daemons sharing over a file store)."""

from __future__ import annotations

import json
import os

import pytest

from conftest import DaemonProc, UnixHTTP, cli_json, run_cli
from oldcode import old_storage
from sessiond.storage.database import Database
from sessiond.storage.errors import BadQuery
from sessiond.storage.schema import SCHEMA_VERSION, statements
from sessiond.storage.search import insert_messages


async def index_agrees(db: Database) -> None:
    """FTS5's own check of the index against the messages table, once it has caught up (as every search
    does first): raises if they differ."""
    await db.searcher.catch_up()
    async with db.c.transaction() as tx:
        await tx.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)")


async def found(db: Database, q: str, **kw) -> list[str]:
    return [h["id"] for h in await db.search(q, **kw)]


@pytest.fixture
async def db(tmp_path):
    d = await Database.open(str(tmp_path / "sessions.db"))
    yield d
    await d.close()


def test_statements_keep_trigger_bodies_whole():
    sql = "CREATE TABLE a (x);\nCREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; SELECT ';'; END;\nSELECT 2;"
    assert statements(sql) == [
        "CREATE TABLE a (x);",
        "CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; SELECT ';'; END;",
        "SELECT 2;",
    ]


async def test_migration_indexes_the_messages_already_there(tmp_path):
    path = str(tmp_path / "sessions.db")
    old = await old_storage().Database.open(path, upto=8)
    s = await old.create_session({"name": "before search"})
    # its row as sessiond wrote it at schema 8 (today's appends also write a column added since, by 10)
    row = (s["id"], "main", old.device_id, 2, 2, "user", "an albatross before the upgrade", 1, 1.0, None)
    async with old.c.transaction() as tx:
        await insert_messages(tx, [row])
    await old.close()
    db = await Database.open(path)  # (migration 9 made the index, 17 made it again with tool calls)
    try:
        assert await db.schema_version() == SCHEMA_VERSION
        assert len(await found(db, "albatross")) == 1
        await index_agrees(db)
    finally:
        await db.close()


async def test_index_follows_appends_compaction_and_deletes(db):
    a = (await db.create_session({"name": "a", "user": "ann"}))["id"]
    b = (await db.create_session({"name": "b", "user": "bob"}))["id"]
    side = (await db.create_chat(a, {"name": "side"}))["id"]
    msgs = [
        {"role": "user", "content": "tell me about the red fox", "tokens": 5},
        {"role": "assistant", "content": "The red fox (Vulpes vulpes) is a fox; fox, fox, fox.", "tokens": 9},
        {"role": "user", "content": "and a grey wolf?", "tokens": 5},
    ]
    stored = await db.append_messages(a, msgs)
    await db.append_messages(a, [{"role": "user", "content": "a fox in the side chat", "tokens": 5}], side)
    await db.append_messages(b, [{"role": "user", "content": "Foxes are clever", "tokens": 3}])
    await index_agrees(db)

    hits = await db.search("fox")
    assert len(hits) == 3 and hits[0]["id"] == stored[1]["id"]  # bm25: the message saying it most first
    top = hits[0]
    assert (top["session"], top["chat"], top["role"], top["seq"]) == (a, "main", "assistant", stored[1]["seq"])
    assert top["created_at"] == stored[1]["created_at"] and top["compacted"] is False
    assert all(top["snippet"][x:y].lower() == "fox" for x, y in top["highlights"]) and top["highlights"]
    # FTS5 syntax: phrase, prefix, AND / OR / NOT
    assert set(await found(db, '"red fox"')) == {stored[0]["id"], stored[1]["id"]}
    assert await found(db, '"fox red"') == []
    assert len(await found(db, "fox*")) == 4 and len(await found(db, "fox")) == 3
    assert set(await found(db, "wolf OR vulpes")) == {stored[1]["id"], stored[2]["id"]}
    assert len(await found(db, "fox NOT red")) == 1 and await found(db, "grey AND wolf") == [stored[2]["id"]]
    # filters: session, user, role, limit
    assert len(await found(db, "fox", session=a)) == 3 and len(await found(db, "fox*", user="bob")) == 1
    assert await found(db, "fox", role="assistant") == [stored[1]["id"]]
    assert len(await found(db, "fox*", limit=1)) == 1

    # compaction sets messages aside but keeps them in the history: still found, and marked
    await db.compact(a, "main", target_tokens=0)
    hits = {h["id"]: h for h in await db.search("fox OR wolf", session=a)}
    assert hits[stored[0]["id"]]["compacted"] and hits[stored[1]["id"]]["compacted"]
    assert not next(h for h in hits.values() if h["chat"] == side)["compacted"]
    await db.compact(a, "main", undo=True)
    assert not any(h["compacted"] for h in await db.search("fox OR wolf", session=a))
    await index_agrees(db)

    # a chat's messages deleted (whatever path deletes rows): gone from the index
    async with db.c.transaction() as tx:
        await tx.execute("DELETE FROM messages WHERE session_id=? AND chat_id=?", (a, side))
    assert len(await found(db, "fox*")) == 3
    await index_agrees(db)
    # a session being imported is hidden; deleted, its messages are gone
    async with db.c.transaction() as tx:
        await tx.execute("UPDATE sessions SET importing=1 WHERE id=?", (b,))
    assert await found(db, "foxes") == []
    async with db.c.transaction() as tx:
        await tx.execute("UPDATE sessions SET importing=0 WHERE id=?", (b,))
    assert len(await found(db, "foxes")) == 1
    await db.delete_session(a)
    assert await found(db, "fox OR wolf") == [] and len(await found(db, "fox*")) == 1
    await index_agrees(db)


async def test_tool_calls_names_and_arguments_are_indexed(db):
    """A model's tool calls (an assistant message's `tool_calls`, often with no text) were not in the index:
    a search for the function called or a value it was given found nothing. The index takes each call's
    name and arguments after the message's text; the snippet shows them; deletes take them out."""
    sid = (await db.create_session({"name": "agent"}))["id"]
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Reykjavik"}'},
    }
    other = {"id": "call_2", "type": "function", "function": {"name": "book_flight", "arguments": '{"to": "Oslo"}'}}
    stored = await db.append_messages(
        sid,
        [
            {"role": "user", "content": "weather up north?", "tokens": 3},
            {"role": "assistant", "content": "", "tool_calls": [call, other], "tokens": 9},
            {"role": "tool", "content": "sunny", "tool_call_id": "call_1", "tokens": 1},
            {"role": "assistant", "content": "Let me check the trains", "tool_calls": [{**call, "id": "c3"}]},
        ],
    )
    await index_agrees(db)
    assert set(await found(db, "reykjavik")) == {stored[1]["id"], stored[3]["id"]}
    assert await found(db, "oslo") == [stored[1]["id"]] and await found(db, "book_flight") == [stored[1]["id"]]
    assert await found(db, "trains AND get_weather") == [stored[3]["id"]]
    [hit] = await db.search("oslo")
    assert "book_flight" in hit["snippet"] and [hit["snippet"][x:y] for x, y in hit["highlights"]] == ["Oslo"]
    [hit] = await db.search("trains")
    assert hit["snippet"].startswith("Let me check the trains")
    # a message's calls changed in place (nothing does so today; a trigger would keep the index right)
    changed = json.dumps(
        {"tool_calls": [{**call, "function": {"name": "get_weather", "arguments": '{"city": "Bergen"}'}}]}
    )
    async with db.c.transaction() as tx:
        await tx.execute("UPDATE messages SET extra=? WHERE session_id=? AND seq=?", (changed, sid, stored[3]["seq"]))
    assert await found(db, "bergen") == [stored[3]["id"]] and await found(db, "reykjavik") == [stored[1]["id"]]
    await index_agrees(db)
    # a message deleted (whatever path deletes it), then the session: nothing of them found, the index agrees
    async with db.c.transaction() as tx:
        await tx.execute("DELETE FROM messages WHERE session_id=? AND seq=?", (sid, stored[1]["seq"]))
    assert await found(db, "oslo") == [] and await found(db, "reykjavik") == []
    await index_agrees(db)
    await db.delete_session(sid)
    assert await found(db, "reykjavik OR get_weather OR sunny") == []
    await index_agrees(db)


async def test_migration_indexes_the_tool_calls_already_there(tmp_path):
    path = str(tmp_path / "sessions.db")
    old = await old_storage().Database.open(path, upto=16)
    sid = (await old.create_session({"name": "before"}))["id"]
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "albatross"}'}}
    stored = await old.append_messages(
        sid,
        [
            {"role": "user", "content": "a petrel", "tokens": 1},
            {"role": "assistant", "content": "", "tool_calls": [call]},
        ],
    )
    await old.close()
    db = await Database.open(path)
    try:
        assert await found(db, "albatross") == [stored[1]["id"]] and await found(db, "petrel") == [stored[0]["id"]]
        await index_agrees(db)
        await db.delete_session(sid)
        assert await found(db, "albatross OR petrel") == []
        await index_agrees(db)
    finally:
        await db.close()


async def test_a_batch_goes_into_the_index_in_few_segments(db):
    """FTS5 writes a segment at every statement firing its trigger: a batch inserted row by row left one
    per message (and merged them over and over, 3x the CPU)."""
    sid = (await db.create_session({"name": "batch"}))["id"]
    async with db.c.transaction() as tx:  # no merging, so that the count is of the segments written
        await tx.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('automerge', 0)")
        await tx.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('crisismerge', 5000)")
    await db.append_messages(sid, [{"role": "user", "content": f"word{i} common", "tokens": 1} for i in range(2500)])
    assert (await db.read_one("SELECT count(*) FROM messages_fts_data"))[0] < 20
    assert len(await found(db, "common", limit=1000)) == 1000 and await found(db, "word2499")
    await index_agrees(db)


@pytest.mark.parametrize("q", ['"unclosed', "a AND", "(fox", "nocolumn:fox", "fox NOT", "*", "AND"])
async def test_malformed_query_is_invalid(db, q):
    with pytest.raises(BadQuery, match="not valid FTS5 syntax"):
        await db.search(q)


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base = tmp_path_factory.mktemp("search")
    url = "file://" + str(base / "store")
    a = DaemonProc(str(base / "a"), url).start()
    b = DaemonProc(str(base / "b"), url).start()
    yield a, b
    a.stop()
    b.stop()


def test_cli_search_json_text_and_errors(pair):
    a, _ = pair
    c = a.client()
    sid = c.create_session(name="cli", user="cara")["id"]
    mid = c.append(sid, "user", "where did the narwhal go")["id"]
    c.append(sid, "assistant", "no idea")
    res = cli_json(a.home, "search", "narwhal", "--session", sid, "--user", "cara", "--role", "user")
    assert res["query"] == "narwhal" and [h["id"] for h in res["hits"]] == [mid]
    hit = res["hits"][0]
    assert (hit["session"], hit["chat"], hit["role"]) == (sid, "main", "user")
    assert hit["snippet"] == "where did the narwhal go" and hit["highlights"] == [[14, 21]]
    assert c.search("narwhal", role="assistant")["hits"] == []

    text = run_cli(a.home, "search", "narwha*", check=True).stdout
    assert "where did the [narwhal] go" in text and sid in text and mid in text

    bad = run_cli(a.home, "search", '"unclosed')
    assert bad.returncode != 0 and "not valid FTS5 syntax" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    bad = run_cli(a.home, "search", "x", "--limit", "0", "--json")
    assert bad.returncode != 0 and json.loads(bad.stdout)["error"]["message"].startswith("--limit")
    # a mistyped --session is said to be one, not "no messages match"
    typo = sid[:-1] + ("y" if sid.endswith("x") else "x")  # never the id itself
    bad = run_cli(a.home, "search", "narwhal", "--session", typo, "--json")
    assert bad.returncode == 1 and json.loads(bad.stdout)["error"]["code"] == "not_found", bad

    # deleted (`sessiond rm`): gone
    c.delete_session(sid)
    assert cli_json(a.home, "search", "narwhal")["hits"] == []


def test_api_search_and_malformed_query(pair):
    a, _ = pair
    c = a.client()
    sid = c.create_session(name="api")["id"]
    c.append(sid, "user", "Quokkas smile")
    assert [h["snippet"] for h in c.search("quokka*")["hits"]] == ["Quokkas smile"]
    conn = UnixHTTP(a.socket)
    for q, status in (
        ("%22unclosed", 400),
        ("a-b", 400),
        ("", 422),
        ("quokkas&limit=0", 422),
        ("quokkas&role=robot", 422),
    ):
        conn.request("GET", f"/v1/search?q={q}")
        r = conn.getresponse()
        body = json.loads(r.read())
        assert r.status == status, (q, body)
        assert body["error"]["message"]
    conn.request("GET", "/v1/search?q=%22unclosed")
    r = conn.getresponse()
    err = json.loads(r.read())["error"]
    assert err["code"] == "bad_query" and "not valid FTS5 syntax" in err["message"]
    conn.close()


def test_search_finds_what_another_daemon_shared(pair):
    a, b = pair
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="shared")["id"]
    ca.append_many(
        sid,
        [{"role": "user", "content": f"line {i}"} for i in range(50)]
        + [{"role": "assistant", "content": "the pangolin is shared"}],
    )
    assert cb.search("pangolin")["hits"] == []
    cb.import_code(ca.share(sid)["code"])
    hits = cb.search("pangolin")["hits"]
    assert [(h["session"], h["role"]) for h in hits] == [(sid, "assistant")]
    assert hits[0]["device"] == ca.status()["device_id"]
    # the index is local: the store holds nothing of it (nor the word, encrypted as everything there)
    for folder, _, files in os.walk(a.store.removeprefix("file://")):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                data = f.read()
            assert b"pangolin" not in data and b"messages_fts" not in data, name


async def test_appends_list_messages_as_pending_and_the_index_takes_them_in_batches(db):
    """A single append does not index its message there and then (that cost an append as much as all the
    rest of it): it is listed as pending, and the index takes the pending ones in batches, before every
    search (so a search finds everything committed before it) and in the daemon's background."""
    sid = (await db.create_session({"name": "later"}))["id"]
    for i in range(5):
        await db.append_messages(sid, [{"role": "user", "content": f"okapi {i}", "tokens": 1}])
    assert (await db.read_one("SELECT count(*) FROM messages_fts_pending"))[0] == 5
    assert len(await found(db, "okapi")) == 5  # the search caught up first
    assert (await db.read_one("SELECT count(*) FROM messages_fts_pending"))[0] == 0
    # a pending message deleted or changed before it was indexed leaves nothing behind
    [m] = await db.append_messages(sid, [{"role": "user", "content": "quokka", "tokens": 1}])
    async with db.c.transaction() as tx:
        await tx.execute("UPDATE messages SET content='wombat' WHERE session_id=? AND seq=?", (sid, m["seq"]))
    assert await found(db, "quokka") == [] and len(await found(db, "wombat")) == 1
    async with db.c.transaction() as tx:
        await tx.execute("UPDATE messages SET content='numbat' WHERE session_id=? AND seq=?", (sid, m["seq"]))
        await tx.execute("DELETE FROM messages WHERE session_id=? AND seq=?", (sid, m["seq"]))
    assert await found(db, "wombat OR numbat") == []
    await index_agrees(db)


async def test_the_background_indexer_lets_appends_in_between_its_chunks(db):
    """The background pass indexes in small transactions, and an append that comes while it works waits
    for one of them, not for the whole backlog (a backlog indexed in one transaction held appends ~2 ms on
    a quarter second's worth: the p99 of a single client's appends, bench/append.py)."""
    import asyncio

    from sessiond.storage import search

    sid = (await db.create_session({"name": "backlog"}))["id"]
    await db.append_messages(sid, [{"role": "user", "content": f"backlog {i}", "tokens": 1} for i in range(640)])
    order: list[str] = []

    async def index() -> None:
        await db.searcher.catch_up(search.BACKGROUND_CHUNK)
        order.append("indexed")

    async def append() -> None:
        await asyncio.sleep(0)  # once the indexer holds the writer
        await db.append_messages(sid, [{"role": "user", "content": "meanwhile", "tokens": 1}])
        order.append("appended")

    await asyncio.gather(index(), append())
    assert order == ["appended", "indexed"]
    assert search.BACKGROUND_CHUNK <= 128
    await index_agrees(db)
    assert len(await found(db, "backlog", limit=1000)) == 640


async def test_the_background_indexer_steps_its_sql_off_the_event_loop(db):
    """The background indexer's statements (FTS5 tokenizing and merging, ~5 us a message and a few ms when
    segments merge) run on the writer's own thread, not on the loop, which an append arriving meanwhile
    needs (bench/results/profile-tail.md: its chunks were ~1.6% of a single client's appends' p99)."""
    import asyncio
    import threading

    from sessiond.storage import search

    sid = (await db.create_session({"name": "off the loop"}))["id"]
    await db.append_messages(sid, [{"role": "user", "content": f"numbat {i}", "tokens": 1} for i in range(200)])
    where: set[int] = set()
    db.c._writer.set_trace_callback(lambda sql: where.add(threading.get_ident()) if "messages_fts(" in sql else None)
    indexer = asyncio.get_running_loop().create_task(db.searcher.run_indexer(every=0.001))
    try:
        for _ in range(2000):
            if not await db.searcher.pending():
                break
            await asyncio.sleep(0.005)
    finally:
        indexer.cancel()
        await asyncio.wait([indexer])
        db.c._writer.set_trace_callback(None)
    assert not await db.searcher.pending()
    assert where and threading.get_ident() not in where, "the index's statements ran on the event loop"
    assert search.BACKGROUND_CHUNK <= 128
    # and the catch-up a search makes first
    await db.append_messages(sid, [{"role": "user", "content": f"quoll {i}", "tokens": 1} for i in range(50)])
    where.clear()
    db.c._writer.set_trace_callback(lambda sql: where.add(threading.get_ident()) if "messages_fts(" in sql else None)
    try:
        assert len(await found(db, "quoll", limit=1000)) == 50
    finally:
        db.c._writer.set_trace_callback(None)
    assert where and threading.get_ident() not in where, "a search's catch-up ran on the event loop"
    await index_agrees(db)
    assert len(await found(db, "numbat", limit=1000)) == 200


def test_the_daemon_indexes_in_the_background(pair):
    a, _ = pair
    c = a.client()
    sid = c.create_session(name="background")["id"]
    c.append(sid, "user", "a capybara in the background")
    db = os.path.join(a.home, "sessions.db")
    import sqlite3

    from waiting import wait_for

    def indexed() -> bool:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return con.execute("SELECT count(*) FROM messages_fts_pending").fetchone()[0] == 0
        finally:
            con.close()

    wait_for(indexed, timeout=10, what="the background indexer")


async def test_the_background_indexer_backs_off_while_the_disk_is_full_and_says_so_once(db, caplog, monkeypatch):
    """A full disk: the indexer's chunk fails (the pending list keeps the messages). It tries again ever
    later, the wait doubling, with one warning for the spell (it was one every 0.25 s, each written to a
    log on the same full disk), and says when it has caught up again."""
    import asyncio
    import logging
    import time

    sid = (await db.create_session({"name": "full"}))["id"]
    words = [f"wombat {i} " + " ".join(f"w{i}x{j}" for j in range(40)) for i in range(300)]  # new index pages
    await db.append_messages(sid, [{"role": "user", "content": w, "tokens": 1} for w in words])
    waits: list[float] = []  # the wait before each try
    real = db.searcher.catch_up

    async def catch_up(*args, **kw):
        waits.append(db.searcher.indexer_wait)
        return await real(*args, **kw)

    monkeypatch.setattr(db.searcher, "catch_up", catch_up)
    await db.c.writer.execute("PRAGMA max_page_count=1")  # no page more than the file has: full
    caplog.set_level(logging.INFO, logger="sessiond.storage")
    indexer = asyncio.get_running_loop().create_task(db.searcher.run_indexer(every=0.004))
    try:
        deadline = time.monotonic() + 10
        while len(waits) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert len(waits) >= 5 and await db.searcher.pending()
        assert waits[:5] == [0.004, 0.008, 0.016, 0.032, 0.064], waits  # doubling, not every 0.004 s
        warned = [r for r in caplog.records if "search index" in r.getMessage() and r.levelno == logging.WARNING]
        assert len(warned) == 1 and "disk is full" in warned[0].getMessage()
        await db.c.writer.execute("PRAGMA max_page_count=1073741823")  # room again

        def caught_up() -> bool:  # (said once its chunk is in: the pending list may be empty a moment before)
            return any("caught up again" in r.getMessage() for r in caplog.records)

        while not caught_up() and time.monotonic() < deadline + 10:
            await asyncio.sleep(0.01)
        assert caught_up() and not await db.searcher.pending()
    finally:
        indexer.cancel()
        await asyncio.wait([indexer])
    assert len(await found(db, "wombat", limit=1000)) == 300
