"""A session's or a chat's policy as another device's operations give it (storage/pulledpolicy.py). The operation is
stored as it came, and its policy went into the session's (the chat's) row whatever its values: a `token_quota`,
`max_context_tokens` or `context_margin` the API would not take (a text: no sessiond writes one, a forged or broken
writer's) failed every append to the session here with a TypeError, and a policy that is no object every read of it.
Such a value is dropped as the row is written (the rest kept, a newer sessiond's keys among them); migration 40 so
mends the rows of earlier pulls."""

from __future__ import annotations

import json
import sqlite3

import pytest

from sessiond.daemon.remote_checks import remote_op
from sessiond.storage import pulledpolicy
from sessiond.storage.database import Database
from sessiond.storage.errors import Invalid, QuotaExceeded
from sessiond.storage.migrations import SCHEMA_VERSION
from sessiond.storage.model import Op, RemoteLog

REMOTE = "f0f0f0f0f0f0f0f0"  # another device
KEPT = {"idle_timeout": 86400, "newer": {"a": 1}}  # taken, and a newer sessiond's key: kept
# (what the operation's policy holds besides KEPT, what its row keeps of it)
ODD = [
    ({"token_quota": "5000"}, {}),
    ({"max_context_tokens": "x"}, {}),
    ({"max_context_tokens": 1000, "context_margin": "x"}, {"max_context_tokens": 1000}),
    ({"max_context_tokens": 1000, "context_margin": 2}, {"max_context_tokens": 1000}),
    ({"token_quota": 2.5, "auto_compact": "no"}, {}),
    ({"checkpoint_interval": True, "token_quota": -1}, {}),
]


async def _remote_op(db, sid: str, kind: str, body: dict) -> None:
    t = (await db.read_one("SELECT created_at FROM sessions WHERE id=?", (sid,)))[0]
    seq = ((await db.read_one("SELECT max(seq) FROM ops WHERE device_id=?", (REMOTE,)))[0] or 0) + 1
    op = Op(sid, REMOTE, seq, 1000 + seq, kind, body, t + 1)
    await db.apply_remote(sid, {REMOTE: RemoteLog(REMOTE, [], [op], seq)})


@pytest.mark.parametrize(("odd", "kept"), ODD)
async def test_another_devices_policy_value_the_api_would_not_take_is_not_kept(db, odd, kept):
    sid = (await db.create_session({"name": "odd", "policy": {"token_quota": 10**6}}))["id"]
    await _remote_op(db, sid, "session.update", {"policy": {**KEPT, **odd}})
    assert (await db.get_session(sid))["policy"] == {**KEPT, **kept}
    await db.append_messages(sid, [{"role": "user", "content": "still written to", "tokens": 5}])
    # a chat's own, by its making and its update
    await _remote_op(db, sid, "chat.create", {"id": "other", "name": "other", "policy": odd})
    await db.append_messages(sid, [{"role": "user", "content": "to the other", "tokens": 5}], "other")
    await _remote_op(db, sid, "chat.update", {"chat": "main", "policy": odd})
    await db.append_messages(sid, [{"role": "user", "content": "to main", "tokens": 5}], "main")
    rows = await db.c.committed.fetchall("SELECT policy FROM chats WHERE session_id=? ORDER BY id", (sid,))
    assert [json.loads(r[0]) for r in rows] == [kept, kept]


# A whole number written as a fraction (100.0): the API takes it, as 100 (api/types.py Number: "1.0 is 1"), and so
# does the check of another device's operations (daemon/remote_checks.py): dropped, another device's quota,
# interval or context budget was none here
WHOLE = {"token_quota": 100.0, "checkpoint_interval": 10.0, "max_context_tokens": float(1 << 40)}


async def test_another_devices_whole_number_written_as_a_fraction_is_the_number(db):
    remote_op("session.update", {"policy": WHOLE}, "operation")  # (what the daemon lets through)
    sid = (await db.create_session({"name": "whole"}))["id"]
    await _remote_op(db, sid, "session.update", {"policy": WHOLE})
    policy = (await db.get_session(sid))["policy"]
    assert policy == WHOLE and all(type(v) is int for v in policy.values()), policy
    await db.append_messages(sid, [{"role": "user", "content": "within", "tokens": 60}])
    with pytest.raises(QuotaExceeded):  # (its quota held here as on the device that set it)
        await db.append_messages(sid, [{"role": "user", "content": "past it", "tokens": 60}])
    await _remote_op(db, sid, "chat.update", {"chat": "main", "policy": {"max_context_tokens": 5000.0}})
    (row,) = await db.c.committed.fetchall("SELECT policy FROM chats WHERE session_id=?", (sid,))
    assert row[0] == '{"max_context_tokens":5000}'


@pytest.mark.parametrize("policy", [[1], "x", 5])
async def test_another_devices_policy_that_is_no_object_is_none(db, policy):
    made = (await db.create_session({"name": "odd"}))["id"]
    await _remote_op(db, made, "session.update", {"policy": policy})
    assert (await db.get_session(made))["policy"] == {}
    await db.append_messages(made, [{"role": "user", "content": "still written to", "tokens": 5}])


@pytest.mark.parametrize("by", ["sqlite3", "apsw"])
def test_the_migration_keeps_what_a_pull_keeps(by):
    """Migration 40's SQL drops what `kept` drops, value for value: on Python's SQLite and on apsw's (3.54.1 or later,
    which a user's Python may bring)."""
    policies: list = [{**KEPT, **odd} for odd, _ in ODD] + [[1], "x", {"token_quota": None}, {"context_margin": 1}]
    policies += [WHOLE, {"token_quota": 1e300, "checkpoint_interval": -0.0, "max_context_tokens": 2.0**41}]
    conn = sqlite3.connect(":memory:") if by == "sqlite3" else _Apsw()
    conn.execute("CREATE TABLE sessions (policy TEXT)")
    conn.execute("CREATE TABLE chats (policy TEXT)")
    conn.executemany("INSERT INTO sessions VALUES (?)", [(json.dumps(p),) for p in policies] + [("not json",)])
    conn.executemany("INSERT INTO chats VALUES (?)", [(json.dumps(p),) for p in policies] + [(None,)])
    conn.executescript(pulledpolicy.MIGRATION)
    # (as JSON text: a whole number kept as 100, not 100.0, which compares equal)
    got = [_text(json.loads(p)) for (p,) in conn.execute("SELECT policy FROM sessions ORDER BY rowid")]
    assert got == [_text(pulledpolicy.kept(p)) for p in policies] + ["{}"]
    got = [p and _text(json.loads(p)) for (p,) in conn.execute("SELECT policy FROM chats ORDER BY rowid")]
    assert got == [_text(pulledpolicy.kept(p)) for p in policies] + [None]


def _text(policy: dict) -> str:
    return json.dumps(policy, sort_keys=True)


class _Apsw:
    """The few calls of sqlite3's connection the test makes, on apsw's."""

    def __init__(self) -> None:
        import apsw

        self.db = apsw.Connection(":memory:")
        self.execute = self.db.execute
        self.executescript = self.db.execute

    def executemany(self, sql: str, rows: list) -> None:
        self.db.executemany(sql, rows)


async def test_the_rows_of_earlier_pulls_are_mended_and_the_others_left_as_they_are(tmp_path):
    path = str(tmp_path / "sessions.db")
    old = await Database.open(path, upto=SCHEMA_VERSION - 1)
    try:
        pulled = (await old.create_session({"name": "pulled"}))["id"]
        kept = (await old.create_session({"name": "kept", "policy": {"token_quota": 500}}))["id"]
    finally:
        await old.close()
    conn = sqlite3.connect(path)
    with conn:  # as a pull before 40 stored another device's policy
        conn.execute("UPDATE sessions SET policy=? WHERE id=?", (json.dumps({**KEPT, "token_quota": "y"}), pulled))
        conn.execute("UPDATE chats SET policy=? WHERE session_id=?", (json.dumps({"context_margin": "x"}), pulled))
        before = conn.execute("SELECT policy FROM sessions WHERE id=?", (kept,)).fetchone()[0]
    conn.close()
    db = await Database.open(path)
    try:
        assert (await db.get_session(pulled))["policy"] == KEPT
        await db.append_messages(pulled, [{"role": "user", "content": "written to again", "tokens": 5}])
        assert (await db.read_one("SELECT policy FROM sessions WHERE id=?", (kept,)))[0] == before  # (not written)
        assert (await db.read_one("SELECT policy FROM chats WHERE session_id=?", (pulled,)))[0] == "{}"
    finally:
        await db.close()


async def test_a_session_holding_a_newer_sessionds_policy_keys_is_exported_and_imported_again(db):
    """A pull keeps a newer sessiond's policy keys (KEPT's `newer`), and `export` writes them: `import-file` of that
    file, on this very daemon (a backup put back, a session moved to another home), refused it (`policy: unknown
    field(s) 'newer'`), the session's as its chats'. Taken as a pull takes them: kept; the keys it knows checked as
    before (a chat's policy naming a session's key is still refused)."""
    from sessiond.daemon import formats

    sid = (await db.create_session({"name": "newer"}))["id"]
    await _remote_op(db, sid, "session.update", {"policy": KEPT})
    await _remote_op(db, sid, "chat.update", {"chat": "main", "policy": {"max_context_tokens": 600, "newer": [1]}})
    data = await formats.export(db, sid, "json")
    await db.delete_session(sid)
    [made], _ = await formats.import_file(db, data, "json", db.c.estimate, remove=db.delete_session)
    assert made["policy"] == KEPT
    (row,) = await db.c.committed.fetchall("SELECT policy FROM chats WHERE session_id=?", (made["id"],))
    assert json.loads(row[0]) == {"max_context_tokens": 600, "newer": [1]}
    await db.delete_session(made["id"])
    data["chats"][0]["policy"] = {"max_context_tokens": "600"}  # (a key it knows: checked as POST checks it)
    with pytest.raises(Invalid, match="max_context_tokens"):
        await formats.import_file(db, data, "json", db.c.estimate, remove=db.delete_session)


async def test_a_chat_holding_another_devices_key_of_a_sessions_policy_is_exported_and_imported_again(db):
    """Another device's chat policy is checked for the keys a chat's takes (daemon/remote_checks.py, CHAT_POLICY): one
    naming a session's (a newer sessiond's chat quota, say) is kept, as `kept` takes its value, and exported so.
    import-file checked a file's chat policy for the keys a chat takes: the file this daemon wrote was refused."""
    from sessiond.daemon import formats

    sid = (await db.create_session({"name": "chat quota"}))["id"]
    await _remote_op(db, sid, "chat.update", {"chat": "main", "policy": {"token_quota": 5, "max_context_tokens": 600}})
    data = await formats.export(db, sid, "json")
    await db.delete_session(sid)
    [made], _ = await formats.import_file(db, data, "json", db.c.estimate, remove=db.delete_session)
    (row,) = await db.c.committed.fetchall("SELECT policy FROM chats WHERE session_id=?", (made["id"],))
    assert json.loads(row[0]) == {"token_quota": 5, "max_context_tokens": 600}
