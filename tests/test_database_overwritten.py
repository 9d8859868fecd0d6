"""A backup copied over sessions.db in place while the daemon runs (`cp backup.db sessions.db`: the same inode,
new content) went unseen: the check before each COMMIT (storage/dbfile.py) looked for a file deleted or
replaced by another one, and the daemon went on writing its pages, and its background checkpoint its WAL, into
the copied-in file, a mix of two databases. Now the file's content changing under the daemon (its size and
modification time moved by no checkpoint of the daemon's), or another program writing to it through SQLite (the writer's
PRAGMA data_version), refuses every write as the replaced file is refused, doctor names it, and nothing of the
daemon's is written into what was put there, its stop neither."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import sqlite3

import pytest

from conftest import DaemonProc
from sessiond.client import ApiError
from sessiond.storage import connections, dbfile
from sessiond.storage.database import Database
from test_database_lost import _made_session
from waiting import eventually


def _sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _names(db: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return sorted(r[0] for r in conn.execute("SELECT name FROM sessions"))


def acknowledged(c, name: str) -> str:
    """A new session named `name` with 20 messages appended: frames in the WAL, not yet checkpointed."""
    sid = c.create_session(name=name)["id"]
    for i in range(20):
        c.append(sid, role="user", content=f"acknowledged {i}")
    return sid


def test_a_database_copied_over_the_file_in_place_refuses_writes_and_is_left_as_copied(home, tmp_path):
    other = str(tmp_path / "other")
    kept = _made_session(other)  # a whole database of another home, stopped cleanly: a backup to copy in
    backup = os.path.join(other, "sessions.db")
    db = os.path.join(home, "sessions.db")
    d = DaemonProc(home).start()
    try:
        with d.client() as c:
            sid = acknowledged(c, "running")
            inode = os.stat(db).st_ino
            shutil.copyfile(backup, db)  # in place: truncated and written, the same file
            assert os.stat(db).st_ino == inode
            copied = _sha(db)
            with pytest.raises(ApiError) as refused:
                c.append(sid, role="user", content="after the copy")
            said = refused.value.message
            assert refused.value.code == "database_lost" and refused.value.status == 503, said
            assert db in said and "overwritten" in said and "before restoring a backup" in said, said
            with pytest.raises(ApiError) as again:  # every write from then on
                c.create_session(name="another")
            assert again.value.code == "database_lost"
            found = [f for f in c.doctor(verify=False)["findings"] if f["check"] == "database"]
            assert found and found[0]["level"] == "problem" and "overwritten" in found[0]["message"], found
            assert _sha(db) == copied  # nothing of the daemon's written into it (the refusal woke the checkpoint)
    finally:
        assert d.stop() == 0
    assert _sha(db) == copied  # the stop neither
    assert not os.path.exists(db + "-wal")  # (its frames would be read as this file's at the next start)
    assert _names(db) == ["kept"]
    d = DaemonProc(home).start()  # the copied-in database is the daemon's now, whole
    try:
        with d.client() as c:
            assert [s["id"] for s in c.list_sessions()["sessions"]] == [kept]
            assert [m["content"] for m in c.messages(kept)["messages"]] == ["acknowledged"]
            c.append(kept, role="user", content="after the restart")
    finally:
        assert d.stop() == 0


def test_another_program_writing_the_database_refuses_the_daemons_writes(home):
    """A backup restored into the live file through SQLite (`sqlite3 sessions.db '.restore backup.db'`), or any
    other program's write: the daemon's caches and bookkeeping no longer say what the file holds."""
    db = os.path.join(home, "sessions.db")
    d = DaemonProc(home).start()
    try:
        with d.client() as c, contextlib.closing(sqlite3.connect(db, timeout=10)) as other:
            sid = c.create_session(name="running")["id"]
            other.execute("UPDATE sessions SET name='renamed elsewhere'")
            other.commit()
            with pytest.raises(ApiError) as refused:
                c.append(sid, role="user", content="after the other write")
            said = refused.value.message
            assert refused.value.code == "database_lost" and "another program" in said, said
    finally:
        assert d.stop() == 0


async def test_the_daemons_own_checkpoints_and_index_writes_are_not_taken_for_another_writer(tmp_path, monkeypatch):
    """The daemon's own other connections write the file too: its background checkpoint (PASSIVE, on a thread,
    while writes go on), the WAL's reset (RESTART) and its truncation after a delete (TRUNCATE, which starts the
    WAL over from another connection: the writer's data_version moves), and the search indexer (on the writer,
    off the loop). None of them is taken for a copy over the file or another program's write."""
    monkeypatch.setattr(connections, "SCRUB_QUIET_S", 0.0)
    db = await Database.open(str(tmp_path / "db.sqlite"))
    indexer = asyncio.create_task(db.searcher.run_indexer(every=0.02))
    try:
        db.c.wal_reset_frames = 32
        cp = db.c._checkpointer
        for n in range(3):
            sid = (await db.create_session({}))["id"]
            for i in range(10):
                await db.append_messages(sid, [{"role": "user", "content": f"words {i} " + "x" * 4000}] * 5)
                passes = cp.passes
                cp.wake()
                await eventually(lambda p=passes: cp.passes > p, what="a background checkpoint")
                await eventually(lambda: db.c._resetting is None, what="a reset under way")
            await db.searcher.catch_up()
            await db.delete_session(sid)
            await eventually(lambda n=n: db.c.wal_scrubs > n, what="the WAL truncated after the delete")
            assert db.c.file.lost() is None
        assert db.c.wal_resets >= 1 and db.c._checkpointer.passes >= 1
        sid = (await db.create_session({}))["id"]
        await db.append_messages(sid, [{"role": "user", "content": "still written"}])
        assert db.c.file.lost() is None
    finally:
        indexer.cancel()
        await asyncio.gather(indexer, return_exceptions=True)
        await db.close()


def test_a_stat_taken_before_one_of_the_daemons_checkpoints_ended_is_not_an_overwrite(tmp_path, monkeypatch):
    # The check before a COMMIT (loop thread) stats the file, then takes the lock; a checkpoint on its thread
    # can end in between, writing the file and keeping what it left: the stat taken before is then older than
    # what the checkpoint kept, and was read as a copy over the file (every write refused with database_lost,
    # seen in the suite: test_converge, test_damaged_log_named).
    from sessiond.storage import dbfile

    path = tmp_path / "sessions.db"
    path.write_bytes(b"\0" * 4096)
    f = dbfile.DatabaseFile(str(path))
    real = dbfile._stat
    race = {"armed": True}

    def stat_then_a_checkpoint_ends(p: str):
        st = real(p)
        if race["armed"] and p == str(path):
            race["armed"] = False
            with f.checkpointing() as go:  # (as the checkpointer's thread would, between the stat and the lock)
                assert go
                with open(path, "ab") as out:
                    out.write(b"\1" * 4096)  # the WAL's pages copied into the file
        return st

    monkeypatch.setattr(dbfile, "_stat", stat_then_a_checkpoint_ends)
    assert f.lost() is None
    monkeypatch.setattr(dbfile, "_stat", real)
    assert f.lost() is None
    with open(path, "r+b") as out:  # a copy over it, no checkpoint of the daemon's: still seen
        out.write(b"\2" * 8192)
    os.utime(path, ns=(0, 0))
    assert f.lost() == dbfile.OVERWRITTEN


def test_a_shorter_copy_while_one_of_the_daemons_checkpoints_runs_is_seen(tmp_path):
    # A copy over the file while a checkpoint of the daemon's runs is taken for that checkpoint's writes (its size
    # and modification time kept as what the checkpoint left): a shorter one went unseen for good, and the reads and
    # writes that met the pages it lacks answered 500 internal (test_database_shrunk.py, now and then under load).
    # The daemon's database never shrinks (no VACUUM: freed pages stay in the file), so a checkpoint never leaves the
    # file shorter than it found it.
    from sessiond.storage import dbfile

    path = tmp_path / "sessions.db"
    path.write_bytes(b"\0" * 16384)
    f = dbfile.DatabaseFile(str(path))
    with f.checkpointing() as go:
        assert go
        with open(path, "r+b") as out:  # as the checkpoint would: pages written, the file grown
            out.seek(16384)
            out.write(b"\1" * 4096)
    assert f.lost() is None  # the daemon's own checkpoint
    with f.checkpointing() as go:
        assert go
        path.write_bytes(b"\2" * 8192)  # `cp backup.db sessions.db` meanwhile: shorter
    assert f.lost() == dbfile.OVERWRITTEN and f.overwritten


def test_a_shorter_copy_is_seen_while_the_daemons_checkpoint_still_runs(tmp_path):
    # A read meeting the shorter copy's missing pages ("database disk image is malformed") asks lost() at once, while
    # the checkpoint the copy landed in may still run: the shrink was judged only when the checkpoint ended, so the
    # read answered 500 internal, not database_lost (a fresh clone's run: test_database_shrunk's page of messages).
    # No checkpoint of the daemon's makes the file shorter than it found it, running or ended.
    from sessiond.storage import dbfile

    path = tmp_path / "sessions.db"
    path.write_bytes(b"\0" * 16384)
    f = dbfile.DatabaseFile(str(path))
    with f.checkpointing() as go:
        assert go
        with open(path, "r+b") as out:  # the checkpoint's own writes, the file grown: not a copy
            out.seek(16384)
            out.write(b"\1" * 4096)
        assert f.lost(by_version=False) is None
        path.write_bytes(b"\2" * 8192)  # `cp backup.db sessions.db` meanwhile: shorter
        assert f.lost(by_version=False) == dbfile.OVERWRITTEN and f.overwritten


async def test_a_failed_request_during_the_daemons_own_truncation_is_not_taken_for_another_writer(tmp_path):
    """A request failing with an SQLite error looks whether the file was lost (Connections.as_lost, through
    daemon/routes/failures.lost_instead): it read the writer's data_version without the writer's lock, and during
    the daemon's own TRUNCATE after a delete (whose version change own_reset adopts only at its end) took that
    change for another program's write: every later write refused until a restart."""
    db = await Database.open(str(tmp_path / "db.sqlite"))
    try:
        for _ in range(5):
            sid = (await db.create_session({}))["id"]
            await db.append_messages(sid, [{"role": "user", "content": "x" * 4000}] * 50)
            await db.delete_session(sid)
            truncation = asyncio.create_task(db.c._checkpoint_between_batches("TRUNCATE"))
            while not truncation.done():
                failed = sqlite3.DatabaseError("database disk image is malformed")
                assert db.c.as_lost(failed) is failed
                await asyncio.sleep(0)
            await truncation
        assert db.c.file.lost() is None
        sid = (await db.create_session({}))["id"]
        await db.append_messages(sid, [{"role": "user", "content": "still written"}])
    finally:
        await db.close()


async def test_a_database_that_vacuums_itself_shrinking_at_a_checkpoint_is_not_taken_for_a_copy(tmp_path, monkeypatch):
    """A checkpoint leaving the file shorter than it found it is taken for a copy over it (DatabaseFile._left: the
    daemon's database never shrinks, nothing runs VACUUM). A database made with auto_vacuum (an SQLite built with
    SQLITE_DEFAULT_AUTOVACUUM, or a file made by another tool) does shrink, at the checkpoint after a delete: every
    write was then refused until a restart."""
    monkeypatch.setattr(connections, "SCRUB_QUIET_S", 0.0)
    path = str(tmp_path / "db.sqlite")
    made = sqlite3.connect(path)
    made.execute("PRAGMA auto_vacuum=FULL")
    made.execute("CREATE TABLE t(a)")
    made.execute("DROP TABLE t")
    made.close()
    db = await Database.open(path)
    try:
        sid, cp = await _grown_and_checkpointed(db)
        grown = os.path.getsize(path)
        await db.delete_session(sid)
        await eventually(lambda: db.c.wal_scrubs >= 1, what="the WAL truncated after the delete")
        assert os.path.getsize(path) < grown  # (what the test is about: the file shrank at the checkpoint)
        assert db.c.file.lost() is None
        sid = (await db.create_session({}))["id"]
        await db.append_messages(sid, [{"role": "user", "content": "still written"}])
    finally:
        await db.close()


@pytest.mark.parametrize("auto_vacuum", [None, "INCREMENTAL"])
async def test_a_copy_landing_after_a_whole_checkpoint_shorter_than_the_database_is_seen(
    tmp_path, monkeypatch, auto_vacuum
):
    """A copy put over the file while one of the daemon's checkpoints ran (its last fsync: most of its time) is
    taken for the checkpoint's writes unless it leaves the file shorter than the checkpoint before left it: a
    backup as long as that (an older copy of the database) went unseen, and appends were acknowledged into it
    (h-flake28 saw it once under load: reads 500 internal, an append answered). A checkpoint that copied the whole
    WAL back sizes the file to the database's pages, so a file shorter than those after it is a copy too.
    A database made with auto_vacuum=INCREMENTAL (by another tool, or an SQLite built with it as its default) was
    taken for one that shrinks at a checkpoint, and such a copy went unseen: it never shrinks unless told to
    (PRAGMA incremental_vacuum, which sessiond never runs); FULL alone shrinks by itself.
    The pass held was at times one the appends' first commit woke, having copied only that: the file no longer
    (`assert 1228800 > 1228800`, 1 run in 25 on a loaded VM): such a pass is let go and the next one held."""
    path = str(tmp_path / "db.sqlite")
    flag = str(tmp_path / "checkpointed")
    if auto_vacuum is not None:
        with contextlib.closing(sqlite3.connect(path)) as made:
            made.execute(f"PRAGMA auto_vacuum={auto_vacuum}")
            made.execute("CREATE TABLE t(a)")
            made.execute("DROP TABLE t")
    db = await Database.open(path)
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == (2 if auto_vacuum else 0)  # (as made)
        sid, cp = await _grown_and_checkpointed(db)
        before = os.path.getsize(path)  # as the checkpoints left it: a backup of then is as long
        for _ in range(10):  # (a pass woken by the appends' first commit copies only that: let go, the next taken)
            monkeypatch.setenv("SESSIOND_TEST_PAUSE", f"wal.checkpointed:{flag}")
            await db.append_messages(sid, [{"role": "user", "content": "more " + "y" * 4000}] * 50)
            passes = cp.passes
            cp.wake()
            await eventually(lambda: os.path.exists(flag), what="the checkpoint done, its guard held")
            if os.path.getsize(path) > before:
                break
            monkeypatch.delenv("SESSIOND_TEST_PAUSE")
            os.remove(flag)
            await eventually(lambda: cp.passes > passes, what="the checkpoint let go")
        assert os.path.getsize(path) > before  # (what the test is about: the checkpoint grew the file)
        with open(path, "r+b") as out:  # `cp backup.db sessions.db`: the file truncated, then written
            out.truncate(0)
            out.write(b"\2" * before)
        monkeypatch.delenv("SESSIOND_TEST_PAUSE")
        os.remove(flag)
        await eventually(lambda: cp.passes > passes, what="the checkpoint's end")
        assert db.c.file.lost() == dbfile.OVERWRITTEN and db.c.file.overwritten
    finally:  # (the checkpoint let go first: a failure above while it was held made the close wait for it for good,
        # the run hung until pytest's timeout and hid what failed)
        monkeypatch.delenv("SESSIOND_TEST_PAUSE", raising=False)
        with contextlib.suppress(FileNotFoundError):
            os.remove(flag)
        await db.close()


async def _grown_and_checkpointed(db: Database):
    """A session of ~800 KB appended to `db`, and a background checkpoint after it that copied it into the file:
    (its id, the checkpointer). One pass after the appends was taken for that: the pass an append woke meanwhile,
    under way as the count of passes was read, ended first, having copied only the WAL it began with (the file
    found at 270 or 550 KB, not 1.2 MB, in 2 calls of 30), and the vacuum test's file that shrank at the delete
    was as long as it (`assert 274432 < 274432`, 1 run of the file in 20)."""
    sid = (await db.create_session({}))["id"]
    for i in range(20):
        await db.append_messages(sid, [{"role": "user", "content": f"{i} " + "x" * 4000}] * 10)
    cp = db.c._checkpointer
    for _ in range(20):  # (a pass that began after the wake, and none left partial by a reader's snapshot)
        passes = cp.passes
        cp.wake()
        await eventually(lambda: cp.passes > passes, what="a background checkpoint")
        if os.path.getsize(db.c.path) >= 200 * 4000:
            return sid, cp
    raise AssertionError(f"no background checkpoint copied the session into the file ({os.path.getsize(db.c.path)})")
