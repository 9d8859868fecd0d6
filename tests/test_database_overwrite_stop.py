"""A file that is no SQLite database, copied over sessions.db in place while the daemon runs, was checkpointed
into at the stop: keep_out's read-only guard could not take its read lock on it, and the closes wrote the
daemon's pages into the user's file. Its name is moved aside while the connections close now (storage/dbfile.py)."""

from __future__ import annotations

import contextlib
import os
import sqlite3

import pytest

from conftest import DaemonProc
from sessiond.client import ApiError
from test_database_overwritten import _sha, acknowledged


def _refused_after(home: str, change) -> tuple[str, str]:
    """A daemon on `home` with a session of acknowledged messages in its WAL, `change`(the database's path) made
    under it, the next append refused as database_lost, the daemon stopped: (the session, the refusal's words)."""
    d = DaemonProc(home).start()
    try:
        with d.client() as c:
            sid = acknowledged(c, "running")
            change(os.path.join(home, "sessions.db"))
            with pytest.raises(ApiError) as refused:
                c.append(sid, role="user", content="after the change")
            assert refused.value.code == "database_lost", refused.value
            return sid, refused.value.message
    finally:
        assert d.stop() == 0


def test_a_file_that_is_no_database_copied_in_place_is_not_checkpointed_into_at_the_stop(home):
    db = os.path.join(home, "sessions.db")
    copied = []

    def notes_over(path: str) -> None:
        size = os.path.getsize(path)
        with open(path, "r+b") as f:  # in place: the same inode, no SQLite database in it
            # (as long as the file was: a shorter one under the daemon's memory-mapped reads is a SIGBUS)
            notes = b"these are my notes, not a database\n"
            f.write((notes * (size // len(notes) + 1))[:size])
        copied.append(_sha(path))

    _, message = _refused_after(home, notes_over)
    assert "overwritten" in message
    assert _sha(db) == copied[0]  # the stop wrote nothing of the daemon's into it
    assert not os.path.exists(db + "-wal")  # moved aside
    assert [n for n in os.listdir(home) if n.startswith("sessions.db-wal.overwritten-")]


def test_a_touch_is_taken_for_a_copy_and_the_way_back_its_refusal_names_loses_nothing(home):
    # The check reads the file's size and modification time: a `touch` is refused as a copy over it (told
    # apart only by reading the file, which costs every checkpoint the database's size: not done). What the
    # refusal says to do when nothing was copied (the WAL moved aside at the stop put back before the start)
    # gives back every acknowledged message.
    db = os.path.join(home, "sessions.db")
    sid, message = _refused_after(home, lambda path: os.utime(path, ns=(1, 1)))  # `touch -d`: content unchanged
    assert "touch" in message and "move that log back" in message, message
    (aside,) = [n for n in os.listdir(home) if n.startswith("sessions.db-wal.overwritten-")]
    with contextlib.closing(sqlite3.connect(f"file:{db}?immutable=1", uri=True)) as conn:  # the file alone
        (alone,) = conn.execute("SELECT count(*) FROM messages WHERE session_id=?", (sid,)).fetchone()
    assert alone < 20  # (the moved log holds acknowledged writes: without it they are not there)
    os.rename(os.path.join(home, aside), db + "-wal")
    d = DaemonProc(home).start()
    try:
        with d.client() as c:
            got = [m["content"] for m in c.messages(sid)["messages"]]
            assert got == [f"acknowledged {i}" for i in range(20)]
            c.append(sid, role="user", content="writes again")
    finally:
        assert d.stop() == 0


def test_a_copy_in_place_with_the_wal_removed_is_not_checkpointed_into_at_the_stop(home):
    """A restore done by hand while the daemon ran: the backup copied over sessions.db in place, and the old WAL
    removed beside it (`rm sessions.db-wal`), as one does so that the backup is not read with it. lost() said "WAL
    deleted" first, whatever it had seen of the file, and the stop's put_back wrote the daemon's WAL into the
    database file (PRAGMA wal_checkpoint(FULL), for a WAL deleted with the file in place): into the user's copy."""
    db = os.path.join(home, "sessions.db")
    copied = []

    def restored_by_hand(path: str) -> None:
        size = os.path.getsize(path)
        with open(path, "r+b") as f:  # in place: the same inode (what `cp backup.db sessions.db` does)
            notes = b"what was copied here, not the daemon's database\n"
            f.write((notes * (size // len(notes) + 1))[:size])
        copied.append(_sha(path))
        os.unlink(path + "-wal")

    _refused_after(home, restored_by_hand)
    assert _sha(db) == copied[0]  # the stop wrote nothing of the daemon's into it
