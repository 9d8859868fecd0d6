"""A compaction that changes nothing writes nothing: as a switch to the current chat or pausing a paused
session, a `compact` whose cut is where it stands, or an `uncompact` of a chat with nothing compacted,
writes no operation (nothing to push, no `chat.compacted` event, no activity), and answers the context as it
is. (Each wrote a chat.update with the cut as read: pushed to every device, and, last-writer-wins there, it
could move back a cut another device made meanwhile.)"""

from __future__ import annotations

import sqlite3

from conftest import cli_json


def _ops(home: str, sid: str) -> int:
    db = sqlite3.connect(f"file:{home}/sessions.db?mode=ro", uri=True)
    try:
        return db.execute("SELECT count(*) FROM ops WHERE session_id=?", (sid,)).fetchone()[0]
    finally:
        db.close()


def test_a_compaction_that_changes_nothing_writes_nothing(daemon):
    h = daemon.home
    c = daemon.client()
    sid = c.create_session(max_context_tokens=1000)["id"]
    for i in range(4):
        c.append(sid, "user", f"message {i}", tokens=10)
    before, session = _ops(h, sid), c.get_session(sid)
    assert c.uncompact(sid)["compacted_messages"] == 0  # nothing compacted: nothing to undo
    assert c.compact(sid, target_tokens=100)["compacted_messages"] == 0  # all of it fits already
    assert _ops(h, sid) == before
    assert c.get_session(sid)["last_activity"] == session["last_activity"]
    done = c.compact(sid, target_tokens=20)  # a real one: written
    assert done["compacted_messages"] == 2 and _ops(h, sid) == before + 1
    assert c.compact(sid, target_tokens=20) == done  # the same cut again
    assert cli_json(h, "compact", sid, "--target-tokens", "30") == done  # (30 keeps what 20 kept: never back)
    assert _ops(h, sid) == before + 1
    assert c.uncompact(sid)["compacted_messages"] == 0 and _ops(h, sid) == before + 2  # a real undo: written
    assert cli_json(h, "uncompact", sid)["compacted_messages"] == 0 and _ops(h, sid) == before + 2
