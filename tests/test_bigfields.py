"""A session's system prompt, initial messages, metadata, tags and preferences, and a chat's system prompt, are
kept out of the rows an append reads and rewrites (schema migration 21: tables `session_texts` and `chat_prompts`):
the append's statements name neither table, every reader still shows them, and a database of schema 19 made by
the sessiond before keeps every field through the migration."""

from __future__ import annotations

import json
import re

from oldcode import old_storage
from sessiond.storage.database import Database
from sessiond.storage.schema import SCHEMA_VERSION

TEXTS = {"system_prompt", "initial_messages", "metadata", "tags", "preferences"}
SIDE_TABLES = re.compile(r"\b(session_texts|chat_prompts)\b")
PROMPT = "You are a careful reader of this document. 文書 " + "lorem ipsum dolor " * 20_000  # ~360 KB


def _full_session(**over) -> dict:
    spec = {
        "name": "a big one",
        "user": "ada",
        "system_prompt": PROMPT,
        "model": "m-1",
        "settings": {"temperature": 0.5},
        "initial_messages": [
            {"role": "user", "content": "first " * 1000},
            {"role": "assistant", "content": "noted", "tokens": 2},
        ],
        "metadata": {"source": "test", "n": [1, 2, {"deep": "yes"}], "doc": "a document " * 50_000},
        "tags": ["alpha", "beta"],
        "preferences": {"theme": "dark"},
        "policy": {"token_quota": 100_000},
        "expires_at": 4_000_000_000.0,
    }
    spec.update(over)
    return spec


async def _everything(db) -> dict:
    """Every session as the API shows it (with counts), its chats, and its messages."""
    out = {}
    for sid in await db.session_ids():
        out[sid] = {
            "session": await db.get_session(sid, counts=True),
            "chats": await db.list_chats(sid),
            "messages": await db.list_messages(sid),
        }
    out["list"] = await db.list_sessions(limit=100)
    out["tagged"] = await db.list_sessions(tag="beta")
    return out


async def test_a_schema_19_database_keeps_every_field_through_the_migration(tmp_path):
    path = str(tmp_path / "db.sqlite")
    old = await old_storage().Database.open(path)
    try:
        assert await old.schema_version() == 19
        full = (await old.create_session(_full_session()))["id"]
        await old.create_chat(full, {"id": "side", "name": "side", "system_prompt": "the chat's own " + PROMPT})
        await old.create_chat(full, {"id": "plain", "name": "plain"})
        await old.append_messages(full, [{"role": "user", "content": "hello", "tokens": 3}])
        await old.append_messages(full, [{"role": "user", "content": "aside"}], chat="side")
        bare = (await old.create_session({"name": "bare"}))["id"]
        changed = (await old.create_session(_full_session(system_prompt="short")))["id"]
        await old.update_session(changed, {"system_prompt": "changed " * 50_000, "initial_messages": []})
        await old.update_chat(changed, "main", lambda c: {"system_prompt": "main's own"})
        dropped = (await old.create_session(_full_session()))["id"]
        await old.update_session(dropped, {"system_prompt": None})
        before = await _everything(old)
    finally:
        await old.close()
    db = await Database.open(path)
    try:
        assert await db.schema_version() == SCHEMA_VERSION
        after = await _everything(db)
        assert json.dumps(after, sort_keys=True) == json.dumps(before, sort_keys=True)
        assert after[full]["session"]["system_prompt"] == PROMPT
        assert {c["id"]: c["system_prompt"] for c in after[full]["chats"]}["side"].startswith("the chat's own ")
        assert after[bare]["session"]["system_prompt"] is None and after[bare]["session"]["initial_messages"] == []
        assert after[dropped]["session"]["system_prompt"] is None
        columns = {r[1] for r in await db.read_all("PRAGMA table_info(sessions)")}
        assert not columns & TEXTS, columns
        assert "system_prompt" not in {r[1] for r in await db.read_all("PRAGMA table_info(chats)")}
        # and the migrated sessions take changes as new ones do
        await db.update_session(full, {"system_prompt": "new"})
        await db.update_chat(full, "side", lambda c: {"system_prompt": None})
        assert (await db.get_session(full))["system_prompt"] == "new"
        assert (await db.get_chat(full, "side"))["system_prompt"] is None
        assert (await db.read_one("SELECT count(*) FROM chat_prompts WHERE session_id=?", (full,)))[0] == 0
    finally:
        await db.close()


async def test_an_append_names_neither_table_of_the_texts(db):
    """Structural: the statements an append runs (SQLite's trace of them, triggers included) read and write
    only the small rows; the prompt is no part of them, however big."""
    sid = (await db.create_session(_full_session(policy={})))["id"]
    await db.create_chat(sid, {"id": "side", "name": "side", "system_prompt": PROMPT})
    statements: list[str] = []
    db.c._writer.set_trace_callback(statements.append)
    try:
        await db.append_messages(sid, [{"role": "user", "content": "one", "tokens": 1}])
        await db.append_messages(sid, [{"role": "user", "content": "two"}], chat="side", key="k-1")
        await db.append_messages(sid, [{"role": "user", "content": "three"}, {"role": "assistant", "content": "4"}])
    finally:
        db.c._writer.set_trace_callback(None)
    assert any("INSERT INTO messages" in s for s in statements), statements  # (the test's premise)
    assert any(s.startswith("UPDATE sessions") for s in statements), statements
    named = [s for s in statements if SIDE_TABLES.search(s)]
    assert named == [], named
    # and no table it reads or writes holds a text (the prompt in the session's row was read and rewritten)
    tables = {r[0] for r in await db.read_all("SELECT name FROM sqlite_master WHERE type='table'")}
    touched = {t for t in tables if any(re.search(rf"\b{t}\b", s) for s in statements)}
    assert {"sessions", "messages", "logs"} <= touched, touched
    for t in touched:
        columns = {r[1] for r in await db.read_all(f"PRAGMA table_info({t})")}
        assert not columns & TEXTS, (t, columns)


async def test_every_write_of_the_texts_reads_back(db):
    """Create, PATCH (a field of the row and a text at once), a chat's prompt set, changed and dropped, a clone
    and a fork: each shows the texts it was given."""
    sid = (await db.create_session(_full_session()))["id"]
    got = await db.update_session(sid, {"name": "renamed", "system_prompt": "p2", "initial_messages": []})
    assert (got["name"], got["system_prompt"], got["initial_messages"]) == ("renamed", "p2", [])
    await db.create_chat(sid, {"id": "c", "name": "c", "system_prompt": "c1"})
    assert (await db.get_chat(sid, "c"))["system_prompt"] == "c1"
    await db.update_chat(sid, "c", lambda c: {"system_prompt": "c2", "name": "c-renamed"})
    assert [(c["id"], c["system_prompt"]) for c in await db.list_chats(sid)] == [("main", None), ("c", "c2")]
    m = await db.append_messages(sid, [{"role": "user", "content": "x"}], chat="c")
    clone = await db.clone(sid)
    fork = await db.fork(sid, m[0]["id"])
    for copy in (clone, fork):
        assert copy["system_prompt"] == "p2" and copy["initial_messages"] == []
        assert {c["id"]: c["system_prompt"] for c in await db.list_chats(copy["id"])}["c"] == "c2"
    await db.update_chat(sid, "c", lambda c: {"system_prompt": None})
    assert (await db.get_chat(sid, "c"))["system_prompt"] is None
    await db.delete_session(sid)
    for table in ("session_texts", "chat_prompts"):
        assert (await db.read_one(f"SELECT count(*) FROM {table} WHERE session_id=?", (sid,)))[0] == 0


async def test_a_checkpoint_reads_no_text(devices):
    """The checkpoints an append's tokens make due (one every checkpoint interval) read the session's row for its
    access and clock, not its texts: each read the 8 MB prompt twice (~20 ms, every ~100 appends)."""
    a, _ = await devices.open()
    db = devices.dba
    sid = (await db.create_session(_full_session(policy={})))["id"]
    await db.append_messages(sid, [{"role": "user", "content": "one", "tokens": 1}])
    statements: list[str] = []
    db.c._writer.set_trace_callback(statements.append)
    db.c._reader.set_trace_callback(statements.append)
    try:
        proof = await a.make_checkpoint(sid)
    finally:
        db.c._writer.set_trace_callback(None)
        db.c._reader.set_trace_callback(None)
    assert proof["number"] == 1 and any("INSERT INTO ops" in s for s in statements), statements  # (the premise)
    named = [s for s in statements if SIDE_TABLES.search(s)]
    assert named == [], named
