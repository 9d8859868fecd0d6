"""sessions.db replaced under a running daemon (a backup put in its place: `cp backup.db x && mv x sessions.db`):
the daemon's stop writes the database it held beside it (sessions.db.held-TIME) and leaves the file put there as it
is, but its WAL, sessions.db-wal, and the WAL's index stayed beside that file: SQLite, closing a database file no
longer at its name, neither checkpoints its WAL nor deletes it. The next start read the daemon's frames as the
copy's own: the user's restore silently undone (or, for a copy of another database, the two mixed page by page).
The stop now moves the daemon's WAL aside (sessions.db-wal.held-TIME), its index deleted; the start and doctor
name it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3

from conftest import DaemonProc, run_cli

HELD_WAL = re.compile(r"sessions\.db-wal\.held-\d{8}T\d{6}")


def _copy(src: str, dest: str) -> None:
    """A consistent copy of the database at `src` (SQLite's backup: the WAL read too), one file."""
    with contextlib.closing(sqlite3.connect(src)) as a, contextlib.closing(sqlite3.connect(dest)) as b:
        a.backup(b)
        b.execute("PRAGMA journal_mode=DELETE")


def _replaced_under(home: str) -> tuple[str, DaemonProc]:
    """A running daemon whose sessions.db was replaced by the user's backup of it (one message of a session, 20
    written after it): (the session, the daemon)."""
    db = os.path.join(home, "sessions.db")
    d = DaemonProc(home).start()
    with d.client() as c:
        sid = c.create_session(name="restored")["id"]
        c.append(sid, role="user", content="in the backup")
        backup = os.path.join(home, "backup.db")
        _copy(db, backup)  # the user's backup: one message
        for i in range(20):
            c.append(sid, role="user", content=f"after the backup {i}")
        os.rename(backup, db)  # put in the database's place while the daemon runs
    return sid, d


def test_the_daemons_wal_is_not_left_beside_a_copy_put_in_its_databases_place(home):
    sid, d = _replaced_under(home)
    assert d.stop() == 0
    names = os.listdir(home)
    (held_wal,) = [os.path.join(home, n) for n in names if HELD_WAL.fullmatch(n)]  # main: none
    assert "sessions.db-wal" not in names and "sessions.db-shm" not in names, names
    (held,) = [n for n in names if re.fullmatch(r"sessions\.db\.held-\d{8}T\d{6}", n)]
    with contextlib.closing(sqlite3.connect(f"file:{os.path.join(home, held)}?immutable=1", uri=True)) as conn:
        assert conn.execute("SELECT count(*) FROM messages WHERE session_id=?", (sid,)).fetchone()[0] == 21

    findings = json.loads(run_cli(home, "doctor", "--json").stdout)["findings"]
    (f,) = [f for f in findings if held_wal in f["message"]]
    assert f["level"] == "warn" and f"rm {held_wal}" in f["fix"], f

    d = DaemonProc(home).start()
    with d.client() as c:  # the copy as it was put there: main read the daemon's 20 later messages into it
        assert [m["content"] for m in c.messages(sid)["messages"]] == ["in the backup"]
    assert d.stop() == 0
    with open(os.path.join(home, "logs", "sessiond.log")) as log:
        started = [json.loads(line) for line in log if held_wal in line]
    assert any(e.get("event") == "database_copy" for e in started), started  # the start named it


def test_a_daemon_killed_after_its_database_was_replaced_leaves_its_wal_out_of_the_copy(home):
    """Killed (a crash, a service manager's stop timeout) after sessions.db was replaced: no stop moved the WAL aside,
    and the next start read the daemon's frames into the copy. The start now tells the WAL of the file the last
    daemon opened from one of the file there (their identities, noted at the opening) and moves it aside, named."""
    db = os.path.join(home, "sessions.db")
    sid, d = _replaced_under(home)
    d.kill()
    assert "sessions.db-wal" in os.listdir(home)  # the daemon's, beside the copy
    findings = json.loads(run_cli(home, "doctor", "--json").stdout)["findings"]
    (f,) = [f for f in findings if f["message"].startswith(f"{db}-wal is the write-ahead log")]
    assert f["level"] == "warn" and "sessiond start" in f["fix"], f  # (doctor, no daemon running, says it)
    d = DaemonProc(home).start()
    with d.client() as c:  # main: the daemon's 20 later messages read into the copy
        assert [m["content"] for m in c.messages(sid)["messages"]] == ["in the backup"]
    assert d.stop() == 0
    (held_wal,) = [os.path.join(home, n) for n in os.listdir(home) if HELD_WAL.fullmatch(n)]
    findings = json.loads(run_cli(home, "doctor", "--json").stdout)["findings"]
    (f,) = [f for f in findings if held_wal in f["message"]]
    assert f["level"] == "warn" and f"rm {held_wal}" in f["fix"], f


def test_a_daemon_killed_with_its_own_database_in_place_keeps_its_wal(home):
    """The usual kill: the WAL is the file's own, read at the next start (nothing moved aside)."""
    d = DaemonProc(home).start()
    with d.client() as c:
        sid = c.create_session(name="kept")["id"]
        for i in range(5):
            c.append(sid, role="user", content=f"acknowledged {i}")
    d.kill()
    d = DaemonProc(home).start()
    with d.client() as c:
        assert len(c.messages(sid)["messages"]) == 5
    assert d.stop() == 0
    assert not [n for n in os.listdir(home) if HELD_WAL.fullmatch(n)]
