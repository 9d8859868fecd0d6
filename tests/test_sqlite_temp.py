"""What SQLite leaves on disk besides the rows (storage/connections.py): its temporary files stay in memory
on every connection of the daemon's database (TEMP_IN_MEMORY): none is made in /var/tmp, outside the
home's private folder, with plaintext pages of conversations in it, and no file is created and deleted
per transaction (a cost that grows with every file freed on a file system without a journal:
bench/results/profile-load.md); and what is deleted is overwritten with zeros (SECURE_DELETE)."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import string
import time

import pytest

from conftest import DaemonProc, run_cli
from sessiond.storage import connections, search
from sessiond.storage.database import Database
from sessiond.storage.sqliteconns import open_reader

MEMORY = 2  # PRAGMA temp_store: 0 default (a file), 1 file, 2 memory

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads open files from /proc")


def sqlite_temp_files() -> list[str]:
    """The files SQLite made for temporary data that this process has open (made and unlinked at once,
    named etilqs_*: seen only through the open descriptors)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "etilqs_" in target:
            found.append(target)
    return found


async def test_a_savepoint_past_64_kib_makes_no_temporary_file(db):
    # group commit runs each transaction after a batch's first in a SAVEPOINT; its sub-journal holds the
    # pages it changes that existed before it, and SQLite spills one past 64 KiB to a temporary file
    w = db.c.writer
    await w.execute("CREATE TABLE scratch(x BLOB)")
    await w.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)"
        " INSERT INTO scratch SELECT randomblob(3000) FROM n"
    )
    await w.execute("BEGIN IMMEDIATE")
    try:
        await w.execute("SAVEPOINT tx")
        await w.execute("UPDATE scratch SET x = randomblob(3000)")  # ~100 pages, 400 KB of sub-journal
        assert sqlite_temp_files() == []
        await w.execute("RELEASE tx")
    finally:
        await w.execute("ROLLBACK")
    assert (await w.execute_fetchall("SELECT count(*) FROM scratch"))[0][0] == 100


async def test_every_connection_keeps_temporary_data_in_memory(db, tmp_path):
    assert (await db.c.writer.execute_fetchall("PRAGMA temp_store"))[0][0] == MEMORY
    assert (await db.c.reader.execute_fetchall("PRAGMA temp_store"))[0][0] == MEMORY
    assert await db.c.bulk(lambda conn: conn.execute("PRAGMA temp_store").fetchone()[0]) == MEMORY
    run_reader = open_reader(os.path.join(tmp_path, "db.sqlite"))  # a push's workers' own connections
    try:
        assert run_reader.execute("PRAGMA temp_store").fetchone()[0] == MEMORY
    finally:
        run_reader.close()


async def _database_with(folder, texts: list[str], **spec) -> tuple[Database, str]:
    """A Database at folder/db.sqlite holding one session (made of `spec`) of user messages `texts`: (it, the
    session id)."""
    db = await Database.open(os.path.join(folder, "db.sqlite"))
    sid = (await db.create_session(spec))["id"]
    await db.append_messages(sid, [{"role": "user", "content": t} for t in texts])
    return db, sid


def _texts_of(marker: str) -> dict:
    """A session's texts kept beside its row (schema migration 21), each holding `marker`: its system prompt and
    initial messages, and a chat's own prompt (`chat`, made apart)."""
    return {
        "system_prompt": f"{marker} in the prompt " + "p" * 20_000,
        "initial_messages": [{"role": "user", "content": f"{marker} in the first message " + "i" * 5_000}],
        "chat": {"id": "side", "name": "side", "system_prompt": f"{marker} in the chat's prompt " + "c" * 20_000},
    }


async def test_a_deleted_sessions_messages_are_not_left_in_the_database_file(tmp_path):
    # secure_delete on the writer (storage/sqliteconns.py SECURE_DELETE), whatever the SQLite build's default
    marker = "the plans nobody else may read, number"
    texts = _texts_of(marker)
    chat = texts.pop("chat")
    db, sid = await _database_with(tmp_path, [f"{marker} {i} " + "x" * 500 for i in range(40)], **texts)
    await db.create_chat(sid, chat)
    assert (await db.get_chat(sid, "side"))["system_prompt"] == chat["system_prompt"]  # (the test's premise)
    await db.delete_session(sid)
    await db.close()  # the WAL is checkpointed into the file
    for name in os.listdir(tmp_path):
        with open(os.path.join(tmp_path, name), "rb") as f:
            assert marker.encode() not in f.read(), name


def _files_holding(folder: str, needle: bytes) -> list[str]:
    found = []
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                if needle in f.read():
                    found.append(name)
    return found


def test_a_deleted_session_leaves_no_file_of_the_home_while_the_daemon_runs(tmp_path):
    # Connections.scrub_soon: the WAL, which is reused rather than truncated, kept the deleted pages in its
    # old frames, and the database file its copies until a checkpoint: `rm` (and an expiry's clean-up)
    # checkpoints the WAL whole and truncates it, with the daemon still running
    home = str(tmp_path / "home")
    d = DaemonProc(home).start()
    try:
        c = d.client()
        keep = c.create_session(name="kept")["id"]
        marker = "the plans nobody else may read, number"
        texts = _texts_of(marker)
        chat = texts.pop("chat")
        sid = c.create_session(name="gone", **texts)["id"]
        c.create_chat(sid, **chat)
        c.append_many(sid, [{"role": "user", "content": f"{marker} {i} " + "x" * 500} for i in range(40)])
        c.append(keep, "user", "still here")
        assert "sessions.db-wal" in _files_holding(home, marker.encode())  # (the test's premise)
        run_cli(home, "rm", sid, check=True)
        deadline = time.monotonic() + 10
        while (left := _files_holding(home, marker.encode())) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert left == [], left
        # and the daemon goes on: the kept session reads, takes an append, and the WAL grows again
        c.append(keep, "user", "after the delete")
        assert [m["content"] for m in c.messages(keep)["messages"]] == ["still here", "after the delete"]
        assert _files_holding(home, b"after the delete") != []
    finally:
        d.stop()
    d.start()  # and opens again with both messages
    try:
        assert len(d.client().messages(keep)["messages"]) == 2
    finally:
        d.stop()


def test_a_deleted_sessions_words_leave_the_search_index(tmp_path):
    # FTS5 takes a message out of the index with a delete marker, and its words stayed in the older
    # segments: after a delete the indexer merges the index whole (storage/search.py, Search.purge), and
    # the WAL is truncated after it. Words no other message has, each checked by its last 16 letters (a
    # segment stores a word after the prefix it shares with the word before it)
    home = str(tmp_path / "home")
    d = DaemonProc(home).start()
    try:
        c = d.client()
        rnd = random.Random(7)

        def words(n: int) -> list[str]:
            return ["".join(rnd.choice(string.ascii_lowercase) for _ in range(24)) for _ in range(n)]

        kept_words, gone_words = words(30), words(30)
        keep = c.create_session(name="kept")["id"]
        sid = c.create_session(name="gone")["id"]
        for batch in range(3):  # several segments, as appends over time make
            c.append_many(keep, [{"role": "user", "content": f"kept {w}"} for w in kept_words[batch::3]])
            c.append_many(sid, [{"role": "user", "content": f"gone {w}"} for w in gone_words[batch::3]])
            assert c.search(gone_words[batch])["hits"]  # indexed now (a search catches the index up)

        def tails(ws: list[str]) -> list[str]:
            return [w for w in ws if _files_holding(home, w[-16:].encode())]

        assert tails(gone_words) == gone_words  # (the test's premise: it can see the index's words)
        run_cli(home, "rm", sid, check=True)
        deadline = time.monotonic() + 20
        while (left := tails(gone_words)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left == [], f"{len(left)} deleted words still on disk"
        # the index still finds every kept message, and nothing of the deleted ones
        assert all(c.search(w)["hits"] for w in kept_words[::7])
        assert not c.search("gone")["hits"] and c.search("kept")["hits"]
        assert tails(kept_words) == kept_words
    finally:
        d.stop()


async def test_a_purge_of_deleted_words_is_kept_across_a_restart(tmp_path):
    # the delete's transaction sets it (schema migration 13); a daemon stopped before its indexer merged
    # merges at its next start
    db, sid = await _database_with(tmp_path, [f"word{i} of a later delete" for i in range(20)])
    empty = (await db.create_session({}))["id"]
    await db.delete_session(empty)  # nothing of it was in the index: nothing to merge
    assert not await db.searcher.purge_wanted()
    await db.searcher.catch_up()
    await db.append_messages(sid, [{"role": "user", "content": "one more"}])  # and others of it still pending
    await db.delete_session(sid)
    assert await db.searcher.purge_wanted()
    await db.close()
    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    try:
        assert await db.searcher.purge_wanted()
        assert await db.searcher.purge() >= 1
        assert not await db.searcher.purge_wanted()
        assert await db.searcher.purge() == 0  # and a second one finds nothing to merge
        assert await db.search("delete") == []
    finally:
        await db.close()


async def test_an_import_cut_short_after_its_words_were_indexed_is_purged_from_the_index(tmp_path):
    # a share-code import writes its messages in chunks of their own transactions, the session hidden
    # (importing=1) until the last; the background indexer takes the chunks written meanwhile. A crash
    # part-way leaves that state, and the next opening deletes the hidden session: its words stayed in
    # the index's segments for good, as no purge was asked for (a delete asks for one)
    db, sid = await _database_with(tmp_path, [f"word{i} of an import cut short" for i in range(20)])
    await db.searcher.catch_up()
    async with db.c.transaction() as tx:  # as apply_remote leaves it until its last transaction
        await tx.execute("UPDATE sessions SET importing=1 WHERE id=?", (sid,))
    await db.close()
    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    try:
        assert await db.session_ids(hidden=True) == []
        assert await db.searcher.purge_wanted()
        assert await db.searcher.purge() >= 1
        assert await db.search("import") == []
    finally:
        await db.close()


async def test_deletes_in_a_row_share_one_purge_of_the_index(tmp_path, monkeypatch):
    # a clean-up deleting many sessions must not merge the whole index once per session: the indexer
    # waits until no delete came for PURGE_QUIET_S
    monkeypatch.setattr(search, "PURGE_QUIET_S", 3.0)
    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    indexer = asyncio.create_task(db.searcher.run_indexer(every=0.02))
    try:
        sids = [(await db.create_session({}))["id"] for _ in range(6)]
        for sid in sids:
            await db.append_messages(
                sid, [{"role": "user", "content": f"words of {sid} number {i}"} for i in range(30)]
            )
        await db.searcher.catch_up()
        for sid in sids[:5]:  # a clean-up's pace: several of the indexer's turns between two deletes
            await db.delete_session(sid)
            await asyncio.sleep(0.1)
        # the purge's last chunk clears the flag in its commit on the writer's thread, and the indexer counts
        # the purge when it next runs on the loop: wait for both (the flag was seen cleared with the count
        # still 0, in the turns between them: 1 run of the suite in ~10)
        deadline = time.monotonic() + 20
        while (await db.searcher.purge_wanted() or not db.searcher.purges) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert not await db.searcher.purge_wanted()
        assert db.searcher.purges == 1
        assert len(await db.search("words", limit=100)) == 30  # the one left
    finally:
        indexer.cancel()
        await asyncio.gather(indexer, return_exceptions=True)
        await db.close()


async def test_deletes_that_never_stop_still_get_their_purge_and_truncation(tmp_path, monkeypatch):
    # a quiet period that never comes (a script deleting a session every half second) does not put the
    # purge of the index or the WAL's truncation off for ever: each runs once it has waited its longest
    monkeypatch.setattr(search, "PURGE_QUIET_S", 3600.0)
    monkeypatch.setattr(search, "PURGE_LATEST_S", 0.3)
    monkeypatch.setattr(connections, "SCRUB_QUIET_S", 3600.0)
    monkeypatch.setattr(connections, "SCRUB_LATEST_S", 0.3)
    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    indexer = asyncio.create_task(db.searcher.run_indexer(every=0.02))
    try:
        sid = (await db.create_session({}))["id"]
        await db.append_messages(sid, [{"role": "user", "content": f"soon gone {i}"} for i in range(30)])
        await db.searcher.catch_up()
        await db.delete_session(sid)
        deadline = time.monotonic() + 20
        while (await db.searcher.purge_wanted() or db.c.wal_scrubs < 2) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert not await db.searcher.purge_wanted() and db.searcher.purges == 1
        assert db.c.wal_scrubs >= 2  # after the delete, and after the purge
    finally:
        indexer.cancel()
        await asyncio.gather(indexer, return_exceptions=True)
        await db.close()


async def test_a_truncation_kept_from_the_wal_by_a_reader_is_done_once_the_reader_ends(tmp_path, monkeypatch):
    # a push's long read holds a snapshot, and a truncation cannot pass it: it is tried again, less and
    # less often, for as long as it takes, not given up (the deleted pages would stay in the WAL)
    for name, value in (
        ("SCRUB_QUIET_S", 0.0),
        ("SCRUB_RETRY_S", 0.02),
        ("SCRUB_TRIES", 2),
        ("SCRUB_RETRY_MAX_S", 0.2),
    ):
        monkeypatch.setattr(connections, name, value)
    db, sid = await _database_with(tmp_path, ["kept from the WAL for a while"])
    reader = sqlite3.connect(os.path.join(tmp_path, "db.sqlite"), isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM messages").fetchone()  # a snapshot the truncation must wait for
        await db.delete_session(sid)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # well past the tries at the first pace
            assert db.c.wal_scrubs == 0
            await asyncio.sleep(0.05)
        reader.execute("COMMIT")
        deadline = time.monotonic() + 20
        while db.c.wal_scrubs == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert db.c.wal_scrubs == 1
        assert _files_holding(str(tmp_path), b"kept from the WAL") == []
    finally:
        reader.close()
        await db.close()
