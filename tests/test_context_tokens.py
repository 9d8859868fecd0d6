"""A message's tokens in its chat's context where they are not its quota's: its extra `context_tokens`
(storage/contextcount.py; an answer an OpenAI-endpoint app went on from, of several it asked for, recorded with
`tokens` 0: tests/test_openai_n_streamed.py). Another device's pulled, a session file's, a row an older sessiond
pulled before the upgrade (migration 36): each counted in the chat's context where it is a count, and only then (a
forged one, not a whole number from 0 to 2^40, dropped or refused, as an answer's checked fields are), the quota
counting `tokens` alone as every version does."""

from __future__ import annotations

import copy
import json
import sqlite3

import pytest

from sessiond.daemon import formats
from sessiond.storage import contextcount
from sessiond.storage.database import Database
from sessiond.storage.errors import Invalid
from sessiond.storage.migrations import SCHEMA_VERSION

# a context_tokens that is no count, each: a pull drops it, the context counts the message's tokens
FORGED = ["50", 2**41, -1, True, 1.5, None, [50], {"n": 50}]


def test_the_sql_counts_what_python_counts():
    """The triggers' count (SQL, contextcount.sql) and an append's (Python, contextcount.of) of every kind of value,
    and of extras that are not an object or not JSON."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE messages (tokens INTEGER, extra TEXT)")
    extras: list = [{"context_tokens": v} for v in [0, 7, 2**40, *FORGED]]
    extras += [{"model": "m"}, {"metadata": {"context_tokens": 9}}]
    rows = [(3, json.dumps(e)) for e in extras] + [(3, None), (None, None), (3, "not json"), (3, "[1]")]
    db.executemany("INSERT INTO messages VALUES (?, ?)", rows)
    got = [n for (n,) in db.execute(f"SELECT {contextcount.sql('m')} FROM messages m ORDER BY rowid")]
    want = [contextcount.of({**e, "tokens": 3}) for e in extras] + [3, 0, 3, 3]
    assert got == want == [0, 7, 2**40] + [3] * (len(FORGED) + 2) + [3, 0, 3, 3], got


async def _set_extra(db, sid: str, content: str, extra: dict) -> None:
    """The message's extra written as `extra` (as a peer's own database would hold it)."""
    async with db.c.transaction() as tx:
        await tx.execute(
            "UPDATE messages SET extra=? WHERE session_id=? AND content=?", (json.dumps(extra), sid, content)
        )


async def test_a_pulled_context_tokens_counts_a_forged_one_is_dropped_and_a_file_keeps_it(devices):
    a, b = await devices.open()
    await a.start()
    await b.start()
    sid = await devices.shared("context tokens")
    dba, dbb = devices.dba, devices.dbb
    msgs = [
        {"role": "user", "content": "q", "tokens": 5},
        {"role": "assistant", "content": "first", "tokens": 50},
        {"role": "assistant", "content": "went on", "tokens": 0, "context_tokens": 50},
        *({"role": "assistant", "content": f"forged {i}", "tokens": 2, "model": "m"} for i in range(len(FORGED))),
    ]
    await dba.append_messages(sid, msgs)
    for i, v in enumerate(FORGED):  # (A: the peer, hostile or buggy)
        await _set_extra(dba, sid, f"forged {i}", {"model": "m", "context_tokens": v})
    await a.pusher.push(sid)
    await b.pull(sid)
    counted = 5 + 50 + 50 + 2 * len(FORGED)
    for db in (dba, dbb):
        assert (await db.context(sid))["active_tokens"] == counted
    # the quota: `tokens` alone, the same on both (main counted it so too)
    assert (await dbb.get_session(sid))["tokens_used"] == (await dba.get_session(sid))["tokens_used"] == counted - 50
    got = {m["content"]: m for m in await dbb.list_messages(sid)}
    assert (got["went on"]["tokens"], got["went on"]["context_tokens"]) == (0, 50)
    assert all("context_tokens" not in got[f"forged {i}"] for i in range(len(FORGED))), got  # (main: kept)
    for peer in (a, b):  # (A's log in the store holds the forged ones: compared as a pull keeps it)
        report = await peer.verify(sid)
        assert report["ok"], report
    # out to a file and back in: kept, and counted
    exported = await formats.export(dbb, sid, "json")
    [went_on] = [m for m in exported["messages"] if m["content"] == "went on"]
    assert (went_on["tokens"], went_on["context_tokens"]) == (0, 50)
    del exported["session"]["id"]  # (a copy beside the one here)
    bad = copy.deepcopy(exported)
    [made], _ = await formats.import_file(dbb, exported, "json", dbb.c.estimate, remove=dbb.delete_session)
    ms = await dbb.list_messages(made["id"])  # (the shared session's first message, of no tokens: estimated)
    assert (ms[3]["content"], ms[3]["tokens"], ms[3]["context_tokens"]) == ("went on", 0, 50)
    assert (await dbb.context(made["id"]))["active_tokens"] == counted + ms[0]["tokens"]
    assert made["tokens_used"] == counted - 50 + ms[0]["tokens"]
    # a file's that is no count: refused, naming it, as a file's usage is
    [m] = [m for m in bad["messages"] if m["content"] == "went on"]
    for v in ("50", -1, 2**41, True):
        m["context_tokens"] = v
        with pytest.raises(Invalid, match=r"messages\[3\]\.context_tokens must be"):
            await formats.import_file(dbb, copy.deepcopy(bad), "json", dbb.c.estimate, remove=dbb.delete_session)


async def test_rows_an_older_sessiond_pulled_are_counted_after_the_upgrade(tmp_path):
    """A 0.39.0 device keeps a peer's context_tokens as an extra field it does not know, and counts the message's
    `tokens` (0) in the context. At its upgrade the chats holding such a message are counted again (migration 36),
    and a forged one is taken out of its row as a pull drops it now (export would write it into a file import-file
    refuses); a chat holding none keeps its count."""
    assert SCHEMA_VERSION >= 36
    path = str(tmp_path / "sessions.db")
    old = await Database.open(path, upto=35)
    try:
        sid = (await old.create_session({"name": "pulled before"}))["id"]
        await old.create_chat(sid, {"id": "side", "name": "side"})
        three = [("user", "q", 5), ("assistant", "went on", 0), ("assistant", "forged", 2)]
        await old.append_messages(sid, [{"role": r, "content": c, "tokens": n} for r, c, n in three])
        aside = [{"role": "user", "content": "aside", "tokens": 4}, {"role": "user", "content": "more", "tokens": 1}]
        await old.append_messages(sid, aside, chat="side")
        await _set_extra(old, sid, "went on", {"model": "m", "context_tokens": 50})
        await _set_extra(old, sid, "forged", {"model": "m", "context_tokens": "9"})
        assert (await old.context(sid))["active_tokens"] == 7  # (0.39.0: as nothing)
    finally:
        await old.close()
    db = await Database.open(path)
    try:
        assert (await db.context(sid))["active_tokens"] == 5 + 50 + 2
        assert (await db.context(sid, "side"))["active_tokens"] == 5
        got = {m["content"]: m for m in await db.list_messages(sid)}
        assert got["went on"]["context_tokens"] == 50 and "context_tokens" not in got["forged"], got
        assert (await db.get_session(sid))["tokens_used"] == 5 + 2 + 5
        # the triggers count it from here on: the message out of the context and back (a cut, then none)
        await db.compact(sid, target_tokens=0)
        assert (await db.context(sid))["active_tokens"] == 0
        await db.compact(sid, undo=True)
        assert (await db.context(sid))["active_tokens"] == 57
    finally:
        await db.close()
