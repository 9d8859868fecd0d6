"""The database file deleted or replaced, with real daemons on real files: a home whose sessions.db is gone while
keys/ still holds its sessions' keys is refused at start, saying so, with nothing deleted (not taken for a fresh
home, whose start would delete those keys as stray: the store's copies of the sessions unreadable for good)."""

from __future__ import annotations

import contextlib
import os
import sqlite3

import pytest

from conftest import DaemonProc
from sessiond.client import ApiError
from waiting import wait_for


def _made_session(home: str) -> str:
    d = DaemonProc(home).start()
    try:
        with d.client() as c:
            sid = c.create_session(name="kept")["id"]
            c.append(sid, role="user", content="acknowledged")
    finally:
        assert d.stop() == 0
    return sid


def test_a_start_with_the_database_gone_but_its_sessions_keys_here_is_refused_and_deletes_nothing(home):
    sid = _made_session(home)
    keys = sorted(os.listdir(os.path.join(home, "keys", "sessions")))
    assert any(n.startswith(sid) for n in keys)
    for name in ("sessions.db", "sessions.db-wal", "sessions.db-shm"):
        if os.path.exists(os.path.join(home, name)):
            os.unlink(os.path.join(home, name))
    d = DaemonProc(home)
    with pytest.raises(RuntimeError) as refused:
        d.start()
        d.stop()  # (started: the test fails, with the daemon stopped)
    said = str(refused.value)
    assert os.path.join(home, "sessions.db") in said and "missing" in said, said
    assert "1 session" in said and "keys" in said and "put it back" in said.lower(), said
    assert sorted(os.listdir(os.path.join(home, "keys", "sessions"))) == keys  # nothing deleted
    assert not os.path.exists(os.path.join(home, "sessions.db"))  # and no empty database made in its place


def _gone(home: str) -> None:
    for name in ("sessions.db", "sessions.db-wal", "sessions.db-shm"):
        if os.path.exists(os.path.join(home, name)):
            os.unlink(os.path.join(home, name))


def test_the_database_deleted_under_a_running_daemon_refuses_writes_is_named_and_put_back_at_stop(home):
    """Deleted while the daemon runs, the file lives on in the daemon's open descriptors only: a write it took
    then would be acknowledged and lost at the next start. Writes are refused saying so, doctor names it, and
    the daemon's stop writes the database it holds back in place: nothing acknowledged is lost."""
    d = DaemonProc(home).start()
    try:
        with d.client() as c:
            sid = c.create_session(name="kept")["id"]
            c.append(sid, role="user", content="acknowledged")
            _gone(home)
            with pytest.raises(ApiError) as refused:
                c.append(sid, role="user", content="after the delete")
            said = refused.value.message
            assert refused.value.code == "database_lost" and refused.value.status == 503, said
            assert os.path.join(home, "sessions.db") in said and "deleted" in said and "stop" in said, said
            # its way on is the owner's (a stop and a start), named so for an app: details.owner
            [owner] = refused.value.details["owner"]
            assert "sessiond stop" in owner and owner in said and "api" not in refused.value.details, owner
            db = [f for f in c.doctor(verify=False)["findings"] if f["check"] == "database"]
            assert db and db[0]["level"] == "problem" and "deleted" in db[0]["message"], db
    finally:
        assert d.stop() == 0
    assert os.path.exists(os.path.join(home, "sessions.db"))  # put back by the stop
    d = DaemonProc(home).start()
    try:
        with d.client() as c:
            assert [m["content"] for m in c.messages(sid)["messages"]] == ["acknowledged"]
            c.append(sid, role="user", content="after the restart")  # and it writes again
    finally:
        assert d.stop() == 0


def test_the_database_replaced_under_a_running_daemon_is_left_as_put_and_the_held_one_written_beside(home):
    d = DaemonProc(home).start()
    try:
        with d.client() as c:
            sid = c.create_session(name="kept")["id"]
            c.append(sid, role="user", content="acknowledged")
            other = os.path.join(home, "other.db")
            with open(other, "wb") as f:
                f.write(b"a backup put in its place")
            os.rename(other, os.path.join(home, "sessions.db"))
            with pytest.raises(ApiError) as refused:
                c.append(sid, role="user", content="after the swap")
            assert refused.value.code == "database_lost" and "replaced" in refused.value.message
    finally:
        assert d.stop() == 0
    with open(os.path.join(home, "sessions.db"), "rb") as f:
        assert f.read() == b"a backup put in its place"  # what was put there is left as it is
    (held,) = [n for n in os.listdir(home) if n.startswith("sessions.db.held-")]
    with contextlib.closing(sqlite3.connect(os.path.join(home, held))) as conn:
        rows = conn.execute("SELECT content FROM messages WHERE session_id=?", (sid,)).fetchall()
    assert [r[0] for r in rows] == ["acknowledged"]


def _in_main_file(db: str, sid: str) -> list[str]:
    """The messages of `sid` in the database file itself, its WAL not read (immutable: nothing made beside it)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?immutable=1", uri=True)) as conn:
        try:
            rows = conn.execute("SELECT content FROM messages WHERE session_id=? ORDER BY rowid", (sid,)).fetchall()
        except sqlite3.OperationalError:  # (no such table yet: the schema is in the WAL too)
            return []
    return [r[0] for r in rows]


def test_the_wal_deleted_under_a_running_daemon_refuses_writes_and_what_it_held_reaches_the_database(home):
    """Deleted while the daemon runs, the WAL holds every commit since the last checkpoint in the daemon's open
    descriptor only: a kill -9 (a crash, a power loss) then lost all of them, the session too, with doctor saying
    'ok'. Writes are refused saying so, doctor names it, and what the WAL held is checkpointed into the database
    file at once, so that even a kill -9 keeps what was acknowledged."""
    d = DaemonProc(home).start()
    try:
        with d.client() as c:
            sid = c.create_session(name="kept")["id"]
            c.append(sid, role="user", content="acknowledged")
            os.unlink(os.path.join(home, "sessions.db-wal"))
            with pytest.raises(ApiError) as refused:
                c.append(sid, role="user", content="after the delete")
            said = refused.value.message
            assert refused.value.code == "database_lost" and "sessions.db-wal" in said and "deleted" in said, said
            db = [f for f in c.doctor(verify=False)["findings"] if f["check"] == "database"]
            assert db and db[0]["level"] == "problem" and "sessions.db-wal" in db[0]["message"], db
        wait_for(
            lambda: _in_main_file(os.path.join(home, "sessions.db"), sid) == ["acknowledged"],
            what="what the deleted WAL held checkpointed into the database file",
        )
    finally:
        d.kill()
    d = DaemonProc(home).start()
    try:
        with d.client() as c:
            assert [m["content"] for m in c.messages(sid)["messages"]] == ["acknowledged"]
            c.append(sid, role="user", content="after the restart")
    finally:
        assert d.stop() == 0


def test_a_sessions_stats_are_answered_while_the_database_is_gone(home):
    """A session's statistics keep the walk of its messages for the next ones (a write): with the database deleted
    under the daemon, which refuses writes, they are answered still, as every read is (the walk not kept)."""
    d = DaemonProc(home).start()
    try:
        with d.client() as c:
            sid = c.create_session(name="kept")["id"]
            c.append(sid, role="user", content="a question")
            c.append(sid, role="assistant", content="an answer")
            _gone(home)
            got = c.stats(session=sid)
            assert got["messages"] == 2 and got["per_chat"][0]["avg_response_seconds"] is not None, got
    finally:
        assert d.stop() == 0
