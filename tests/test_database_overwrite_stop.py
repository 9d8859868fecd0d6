"""A file that is no SQLite database, copied over sessions.db in place while the daemon runs, was checkpointed
into at the stop: keep_out's read-only guard could not take its read lock on it, and the closes wrote the
daemon's pages into the user's file. Its name is moved aside while the connections close now (storage/dbfile.py)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3

import pytest

from conftest import DaemonProc
from sessiond.client import ApiError


def _sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_a_file_that_is_no_database_copied_in_place_is_not_checkpointed_into_at_the_stop(home):
    db = os.path.join(home, "sessions.db")
    d = DaemonProc(home).start()
    try:
        with d.client() as c:
            sid = c.create_session(name="running")["id"]
            for i in range(20):  # frames in the WAL, not yet checkpointed
                c.append(sid, role="user", content=f"acknowledged {i}")
            size = os.path.getsize(db)
            with open(db, "r+b") as f:  # in place: the same inode, no SQLite database in it
                # (as long as the file was: a shorter one under the daemon's memory-mapped reads is a SIGBUS)
                notes = b"these are my notes, not a database\n"
                f.write((notes * (size // len(notes) + 1))[:size])
            copied = _sha(db)
            with pytest.raises(ApiError) as refused:
                c.append(sid, role="user", content="after the copy")
            assert refused.value.code == "database_lost" and "overwritten" in refused.value.message
    finally:
        assert d.stop() == 0
    assert _sha(db) == copied  # the stop wrote nothing of the daemon's into it
    assert not os.path.exists(db + "-wal")  # moved aside
    assert [n for n in os.listdir(home) if n.startswith("sessions.db-wal.overwritten-")]


def test_a_touch_is_taken_for_a_copy_and_the_way_back_its_refusal_names_loses_nothing(home):
    # The check reads the file's size and modification time: a `touch` is refused as a copy over it (told
    # apart only by reading the file, which costs every checkpoint the database's size: not done). What the
    # refusal says to do when nothing was copied (the WAL moved aside at the stop put back before the start)
    # gives back every acknowledged message.
    db = os.path.join(home, "sessions.db")
    d = DaemonProc(home).start()
    try:
        with d.client() as c:
            sid = c.create_session(name="touched")["id"]
            for i in range(20):
                c.append(sid, role="user", content=f"acknowledged {i}")
            os.utime(db, ns=(1, 1))  # what `touch -d` does: the content unchanged
            with pytest.raises(ApiError) as refused:
                c.append(sid, role="user", content="after the touch")
            message = refused.value.message
            assert refused.value.code == "database_lost" and "touch" in message and "move that log back" in message
    finally:
        assert d.stop() == 0
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
