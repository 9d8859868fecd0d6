"""The daemon's background work once its database file was overwritten in place under it (`cp backup.db
sessions.db`), with real connections on real files: nothing of it writes into the copy put there, nor
acknowledges what it wrote. The check before each COMMIT (storage/dbfile.py) covered the group commit only."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3

import pytest

from sessiond.storage import connections
from sessiond.storage.database import Database
from sessiond.storage.errors import DatabaseLost
from sessiond.storage.search import BACKGROUND_CHUNK
from waiting import eventually


def _frames(path: str) -> bytes:
    """The WAL's bytes up to its last non-zero one (the checkpointer allocates it ahead with zeros meanwhile)."""
    with open(path, "rb") as f:
        return f.read().rstrip(b"\0")


async def _backup(folder: str) -> str:
    """A whole database of another home, closed cleanly: a backup to copy over the running one."""
    os.makedirs(folder)
    other = await Database.open(os.path.join(folder, "sessions.db"))
    await other.create_session({"name": "kept"})
    await other.close()
    return os.path.join(folder, "sessions.db")


async def _overwritten(tmp_path) -> tuple[Database, str]:
    """A database with messages the search index has not taken yet, a backup then copied over its file in place."""
    backup = await _backup(str(tmp_path / "other"))
    path = str(tmp_path / "sessions.db")
    db = await Database.open(path)
    sid = (await db.create_session({}))["id"]
    await db.append_messages(sid, [{"role": "user", "content": f"words {i}"} for i in range(10)])
    cp = db.c._checkpointer  # (a copy while one of the daemon's checkpoints runs is taken for its writes)
    passes = cp.passes
    cp.wake()
    await eventually(lambda: cp.passes > passes, what="a background checkpoint")
    await eventually(lambda: db.c.file._checkpoints == 0, what="the checkpoint ended")
    shutil.copyfile(backup, path)  # in place: the same inode, new content
    return db, path


async def test_the_search_indexs_chunks_are_not_written_after_the_file_was_overwritten(tmp_path):
    # The background indexer's chunks commit on the writer's thread (Connections.write_off_loop), past the check
    # the group commit makes before each COMMIT: they went on into the WAL (moved aside at the stop), each
    # acknowledged, their reads mixing the copy's pages with the daemon's.
    db, path = await _overwritten(tmp_path)
    try:
        wal = _frames(path + "-wal")
        with pytest.raises(DatabaseLost) as refused:
            await db.searcher.catch_up(BACKGROUND_CHUNK, off_loop=True)
        assert "overwritten in place" in refused.value.message, refused.value.message
        assert _frames(path + "-wal") == wal  # nothing of it committed
    finally:
        await db.close()


async def test_the_background_indexer_outlives_the_refusal_and_tries_again_later(tmp_path):
    db, path = await _overwritten(tmp_path)
    indexer = asyncio.create_task(db.searcher.run_indexer(every=0.01))
    try:
        await eventually(lambda: db.searcher.indexer_wait > 0.04, what="the indexer backing off")
        assert not indexer.done()  # (not ended by the refusal: it tries again, less and less often)
    finally:
        indexer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await indexer
        await db.close()


async def test_nothing_opens_the_database_by_name_once_the_file_is_deleted(tmp_path, monkeypatch):
    # The WAL's truncation after a delete (Connections.scrub_soon) and its reset checkpoint on a connection opened
    # by the database's name: with sessions.db deleted under the daemon (its WAL and -shm left), that made a new,
    # empty sessions.db there and read the daemon's WAL and wal-index with it; the deleted file, no longer seen as
    # deleted but as replaced, was not written back in place at the close.
    monkeypatch.setattr(connections, "SCRUB_QUIET_S", 0.0)
    path = str(tmp_path / "sessions.db")
    db = await Database.open(path)
    try:
        sid = (await db.create_session({"name": "kept"}))["id"]
        await db.append_messages(sid, [{"role": "user", "content": "acknowledged"}])
        os.unlink(path)  # `rm sessions.db`: the WAL and its index left
        db.c.scrub_soon()  # (as after a delete committed just before)
        await eventually(lambda: db.c._scrubbing is None, what="the scrub over")
        assert not os.path.exists(path)  # nothing made in its place
        await db.c._reset_wal()  # nor by a reset of the WAL
        assert not os.path.exists(path)
        with pytest.raises(DatabaseLost):  # a push's reader of a long run neither
            db.run_reader()
        assert not os.path.exists(path)
    finally:
        await db.close()
    # written back in place at the close, whole
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT content FROM messages WHERE session_id=?", (sid,)).fetchall()
    assert [r[0] for r in rows] == ["acknowledged"]


async def test_a_copy_under_way_does_not_get_the_daemons_wal_deleted(tmp_path):
    # `cp backup.db sessions.db` truncates the file first. A connection whose first read came then (the bulk
    # reader's, at the first push or export; one opened by the database's name: a push's reader, a WAL reset's)
    # took the empty file for a database whose WAL is left over, and SQLite deleted the daemon's WAL: the copy was
    # then said to be 'WAL deleted', and the stop checkpointed the daemon's WAL into what was copied (put_back).
    from sessiond.storage.dbfile import OVERWRITTEN

    path = str(tmp_path / "sessions.db")
    db = await Database.open(path)
    try:
        sid = (await db.create_session({}))["id"]
        await db.append_messages(sid, [{"role": "user", "content": "acknowledged"}])
        cp = db.c._checkpointer
        await eventually(lambda: cp.passes > 0 and db.c.file._checkpoints == 0, what="the first checkpoint over")
        os.truncate(path, 0)  # the copy's first step
        with contextlib.suppress(DatabaseLost):
            await db.c.bulk(lambda conn: conn.execute("SELECT count(*) FROM messages").fetchall())
        with contextlib.suppress(DatabaseLost):
            db.run_reader().close()
        assert os.path.exists(path + "-wal")
        assert db.c.file.lost() == OVERWRITTEN
    finally:
        await db.close()


NOTES = b"my notes\n"


async def _wal_replaced(tmp_path) -> tuple[Database, str, str]:
    """A database with a message in its WAL, another file then put in the WAL's place: (it, its path, the session)."""
    path = str(tmp_path / "sessions.db")
    db = await Database.open(path)
    sid = (await db.create_session({}))["id"]
    await db.append_messages(sid, [{"role": "user", "content": "acknowledged"}])
    mine = str(tmp_path / "notes")
    with open(mine, "wb") as f:
        f.write(NOTES)
    os.rename(mine, path + "-wal")
    return db, path, sid


async def test_a_file_put_in_the_wals_place_is_not_allocated_ahead(tmp_path):
    # The checkpointer keeps the WAL allocated ahead of its end, opening it by its name: with another file put in
    # the WAL's place while the daemon ran, it grew that file by 32 MB of zeros (posix_fallocate).
    db, path, _ = await _wal_replaced(tmp_path)
    try:
        cp = db.c._checkpointer
        passes = cp.passes
        cp.truncated()  # (as after a truncation: allocated ahead again)
        await eventually(lambda: cp.passes > passes, what="a background checkpoint")
        assert os.path.getsize(path + "-wal") == len(NOTES)
    finally:
        await db.close()


async def test_a_file_put_in_the_wals_place_is_left_by_the_stop(tmp_path):
    # The last of the daemon's connections to close deletes the WAL by its name (SQLite, once it has checkpointed
    # it): with another file put in the WAL's place while the daemon ran, the stop deleted that file.
    db, path, sid = await _wal_replaced(tmp_path)
    await db.close()
    with open(path + "-wal", "rb") as f:
        assert f.read() == NOTES
    assert not [n for n in os.listdir(tmp_path) if "hold" in n]  # (nothing left beside it)
    with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as conn:  # what the WAL held
        rows = conn.execute("SELECT content FROM messages WHERE session_id=?", (sid,)).fetchall()
    assert [r[0] for r in rows] == ["acknowledged"]
