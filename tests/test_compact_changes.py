"""Compaction as a user sees it. One that changes nothing writes nothing: as a switch to the current chat or
pausing a paused session, a `compact` whose cut is where it stands, or an `uncompact` of a chat with nothing
compacted, writes no operation (nothing to push, no `chat.compacted` event, no activity), and answers the
context as it is (each wrote a chat.update with the cut as read: pushed to every device, and, last-writer-wins
there, it could move back a cut another device made meanwhile). And `log` marks what compaction set aside."""

from __future__ import annotations

import re
import sqlite3

from conftest import cli_json, run_cli

ID = re.compile(r"^[0-9a-f]{16}-[0-9]+$")


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


def test_log_marks_the_messages_compaction_set_aside(daemon):
    """`log` listed a compacted chat's messages as any others: what the model is no longer sent could be told
    only by counting from `context`'s "up to ID". It marks them `[compacted]` (a chat's system messages stay,
    unmarked), in every chat of `--all`, and in a window (`--last`, `--limit`) that leaves the cut out; `--json`
    gives the messages as they are."""
    h = daemon.home
    c = daemon.client()
    sid = c.create_session(max_context_tokens=1000)["id"]
    c.create_chat(sid, id="side")
    ids = [c.append(sid, "user", f"m{i}", tokens=10)["id"] for i in range(4)]
    note = c.append(sid, "system", "a system note")["id"]
    ids.append(c.append(sid, "user", "m4", tokens=10)["id"])
    side = [c.append(sid, "user", f"s{i}", tokens=10, chat="side")["id"] for i in range(2)]
    c.compact(sid, target_tokens=25)  # main: m0..m2 set aside, m3, the note and m4 stay
    c.compact(sid, chat="side", target_tokens=10)  # side: s0 set aside

    def marked(*args: str) -> list[str]:
        out = run_cli(h, "log", sid, *args)
        assert out.returncode == 0, out.stderr
        return [w for line in out.stdout.splitlines() if "[compacted]" in line for w in line.split() if ID.match(w)]

    assert marked() == ids[:3]
    assert marked("--all") == [*ids[:3], side[0]]
    assert marked("--last", "3") == [] and marked("--limit", "2") == ids[:2]
    assert marked("--chat", "side", "--last", "1") == [] and marked("--chat", "side", "--limit", "1") == side[:1]
    short = run_cli(h, "log", sid, "--short").stdout.splitlines()
    assert short[0].endswith("[compacted] m0") and not any("[compacted]" in x for x in short[3:]), short
    assert note not in marked() and "compacted" not in run_cli(h, "log", sid, "--json").stdout
