"""Every read-only look at a database file opens it by an SQLite URI, which reads a '?' as its query, a '#' as
its fragment and a '%' as an escape: a home named with one of them ("what? #1 100%") made those looks fail or
open another file. Each quotes the path now (storage/fsutil.py `sqlite_ro_uri`), as doctor's already did."""

from __future__ import annotations

import os
import sqlite3

from sessiond.daemon import storerecord
from sessiond.storage import heldfiles


def _database(tmp_path) -> str:
    folder = os.path.join(str(tmp_path), "what? #1 100%")
    os.makedirs(folder)
    path = os.path.join(folder, "sessions.db")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE sessions (id TEXT)")
        conn.execute("INSERT INTO sessions VALUES ('s1')")
        conn.execute("CREATE TABLE sync_state (session_id TEXT, head_rev INTEGER, pushed_seq INTEGER)")
        conn.execute("INSERT INTO sync_state VALUES ('s1', 1, 1)")  # (pushed, to the home's store: no remotes)
    conn.close()
    return path


def test_a_held_copy_under_a_path_with_uri_characters_reads_as_whole(tmp_path):
    assert "not a whole database" not in heldfiles._whole(_database(tmp_path))


def test_the_store_record_of_a_home_with_uri_characters_is_read(tmp_path):
    # (main opened "<tmp>/what" instead, made it an empty database, and answered that nothing was pushed)
    assert storerecord._pushed_to_the_home_store(_database(tmp_path)) is True
    assert os.listdir(tmp_path) == ["what? #1 100%"]
