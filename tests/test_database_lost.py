"""The database file deleted or replaced, with real daemons on real files: a home whose sessions.db is gone while
keys/ still holds its sessions' keys is refused at start, saying so, with nothing deleted (not taken for a fresh
home, whose start would delete those keys as stray: the store's copies of the sessions unreadable for good)."""

from __future__ import annotations

import os

import pytest

from conftest import DaemonProc


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
