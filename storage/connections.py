"""The connections to the database file and its write transactions: the machinery under the read rule
stated at the top of storage/database.py.

* the writer: one stdlib `sqlite3` connection, used inline on the daemon's event loop. Every write goes
  through it. A write transaction spans several awaits (a caller may await other work inside it), so
  writers take turns on an asyncio lock (a statement from another coroutine would otherwise land inside
  someone else's transaction);
* the reader: a second stdlib connection, read-only, also inline, for reads of committed state
  (`Committed`);
* the bulk thread: a stdlib connection in a one-thread executor, both owned here (made in open, shut in
  close), for long reads (a push's runs, a checkpoint's chain) that would otherwise hold up the loop;
* the checkpointer (storage/wal.py): the WAL is copied back into the database file by a background thread
  on a connection of its own (`PRAGMA wal_checkpoint(PASSIVE)`), never by a commit on the append path.

Why inline and not a thread per connection (aiosqlite, which sessiond used before): in WAL mode with
synchronous=NORMAL a commit does not fsync, so every statement of an append is a few microseconds of
SQLite work, while each hop to a connection's thread and back costs ~50-100 us of scheduling and a
wake-up of the loop. An append was ~6 hops (BEGIN, a read, inserts, COMMIT): measured, the hops were
most of an append's CPU and most of its latency (bench/results/compare.json). The work that is long
(checkpoints, the runs a push reads, exports) stays off the loop, on threads of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from .activity import watch
from .appendone import APPEND_ONE_SQL
from .contexttotals import FixedCache
from .dbfile import OVERWRITTEN, DatabaseFile
from .errors import DatabaseLost, UnusableDatabase, crash_at
from .groupcommit import GroupCommit, Transacting
from .heldfiles import note_opened, wal_of_another
from .ids import new_device_id
from .schema import SCHEMA_VERSION, NewerSchema, migrate
from .sqliteconns import (
    NO_MAP,
    READER_PRAGMAS,
    SECURE_DELETE,
    TEMP_IN_MEMORY,
    Committed,
    Inline,
    open_reader,
    run_transaction,
)
from .tokens import Estimator
from .tokens import get as get_estimator
from .wal import (
    CHECKPOINT_ROWS,
    SCRUB_LATEST_S,
    SCRUB_QUIET_S,
    SCRUB_RETRY_MAX_S,
    SCRUB_RETRY_S,
    SCRUB_TRIES,
    SCRUB_WAIT_MS,
    WAL_OPENED,
    WAL_RESET_FRAMES,
    WAL_RESET_WAIT_MS,
    Checkpointer,
    checkpoint,
)

Row = sqlite3.Row
T = TypeVar("T")
log = logging.getLogger("sessiond.storage")


class Connections:
    """The writer, the reader, the bulk thread and the checkpointer of one database file, and who may use
    which."""

    def __init__(
        self,
        writer: sqlite3.Connection,
        reader: sqlite3.Connection,
        bulk: sqlite3.Connection,
        device_id: str,
        path: str,
    ):
        self._writer = writer
        self._reader = reader
        self.writer = Inline(writer)  # for the schema code and tests that build old schemas
        self.reader = Inline(reader)
        self._bulk_conn = bulk
        self._bulk = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sessiond-db-bulk")
        self._off_loop = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sessiond-db-write")
        self.wal_reset_frames = WAL_RESET_FRAMES
        # deleted, replaced or overwritten under the daemon: writes refused, put back (or left out) at close
        self.file = DatabaseFile(path, writer)
        self._path = path
        self.wal_resets = 0  # WAL resets done (tests read it)
        self._resetting: asyncio.Task | None = None
        self.wal_scrubs = 0  # WAL truncations after deletes (tests read it)
        self._scrub_wanted = False
        self._closing = False
        self.checkpoint_locked_ms = 0.0  # how long the last reset or truncation held the writer (benches)
        self.deleted_at = 0.0  # time.monotonic() of the last delete this process committed (deleted())
        self._scrubbing: asyncio.Task | None = None
        self._changes_mark = 0
        self.device_id = device_id
        self.path = path
        self.listeners: list[Callable[[dict], Any]] = []  # told each event after its commit
        self.on_expired: Callable[[str], Any] | None = None  # told the id of a session a write found expired
        self.limits: dict[str, int] = {}  # max_active_sessions(_per_user), max_chats_per_session, ...
        self.estimate: Estimator = get_estimator()  # text -> tokens: config.toml's token_estimator (the daemon's)
        # chats' fixed tokens (system prompt, initial messages) by their texts' stamp: an append's budget check
        self.fixed_cache = FixedCache()
        self.group = GroupCommit(writer, self._committed, self.emit, self._check_file)  # the write transactions
        self.committed = Committed(reader, self.file, self.group)  # the read rule's reads of committed state
        self.importing: set[str] = set()  # sessions whose import is under way (apply_remote)
        # last: its connection and thread are the only things here a failure of the set-up above would leave open
        # (the executors start no thread before their first call); _open closes the connections it was given
        self._checkpointer = Checkpointer(
            path, lambda: self.wal_reset_frames, self.file.checkpointing, self.file.at_least
        )

    @classmethod
    async def open(cls, path: str, *, upto: int | None = None) -> Connections:
        """The database at `path`, made if there is none and migrated to this sessiond's schema. One this
        sessiond cannot use (newer, damaged) raises UnusableDatabase, saying which and what to do."""
        try:
            return await cls._open(path, upto)
        except NewerSchema as exc:
            raise UnusableDatabase(
                f"{path} was written by a newer sessiond (schema version {exc.version}; this one reads up to "
                f"{SCHEMA_VERSION}): upgrade sessiond (or use another --home with this version); nothing was changed"
            ) from None
        except sqlite3.OperationalError as exc:  # locked past the busy timeout, unreadable, no room: not damage
            raise UnusableDatabase(
                f"{path} cannot be opened ({exc}): check that it and its folder are yours and the disk has room; "
                f"`sessiond doctor` checks the home"
            ) from None
        except sqlite3.DatabaseError as exc:  # not a database, truncated, a page unreadable
            raise UnusableDatabase(
                f"{path} is damaged ({exc}): restore it from a backup, or move it aside to start with an empty "
                f"cache (sessions shared with other devices can be imported again); `sessiond doctor` checks it"
            ) from None

    @classmethod
    async def _open(cls, path: str, upto: int | None) -> Connections:
        wal_of_another(path)  # (a daemon's WAL of a file replaced under it, which it was killed before moving aside)
        if not os.path.exists(path):  # create it private from the first byte
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        reader = bulk = None
        try:
            writer.row_factory = sqlite3.Row
            writer.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed transaction survives a crash of the process (kill -9);
            # only a power loss may lose the very last commits, and never corrupts the database.
            writer.execute("PRAGMA synchronous=NORMAL")
            writer.execute("PRAGMA foreign_keys=ON")
            writer.execute("PRAGMA busy_timeout=5000")
            writer.execute(TEMP_IN_MEMORY)
            writer.execute(SECURE_DELETE)
            writer.execute(NO_MAP)
            # checkpoints run on the Checkpointer's thread, never inside a commit on the append path
            writer.execute("PRAGMA wal_autocheckpoint=0")
            await migrate(Inline(writer), upto)
            if upto is None:  # (the writer's own, in memory: TEMP_IN_MEMORY above)
                writer.executescript(APPEND_ONE_SQL)
                watch(writer)  # (sessions' last activities noted as made: storage/activity.py)
            if upto is None or upto >= 6:
                # an import a crash cut short (its session hidden, see apply_remote): nothing of it stays,
                # and it can be run again (its rows go with it: ON DELETE CASCADE). One from a file is left
                # to the daemon's start, which says so and deletes it whole (daemon/server.py).
                keep = " AND id NOT IN (SELECT session_id FROM file_imports)" if upto is None or upto >= 12 else ""
                hidden = "SELECT id FROM sessions WHERE importing=1" + keep
                writer.execute("BEGIN IMMEDIATE")
                try:
                    if upto is None or upto >= 13:
                        # the words of its messages the indexer took meanwhile leave the index, as a delete's
                        # do (search.py PURGE_IF_INDEXED; the indexer merges the index whole)
                        writer.execute(
                            "INSERT OR IGNORE INTO search_purge(id) SELECT 1 WHERE EXISTS (SELECT 1 FROM messages m"
                            f" WHERE m.session_id IN ({hidden})"
                            " AND NOT EXISTS (SELECT 1 FROM messages_fts_pending p WHERE p.id=m.rowid))"
                        )
                    writer.execute(f"DELETE FROM sessions WHERE id IN ({hidden})")
                    writer.execute("COMMIT")
                except BaseException:
                    writer.execute("ROLLBACK")
                    raise
            # (set-up, before anyone else holds this object: the only reads on the writer outside a
            # transaction)
            rows = writer.execute("SELECT value FROM meta WHERE key='device_id'").fetchall()
            if rows:
                device_id = rows[0][0]
            else:
                device_id = new_device_id()
                writer.execute("INSERT INTO meta(key, value) VALUES ('device_id', ?)", (device_id,))
            reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            reader.row_factory = sqlite3.Row
            for pragma in READER_PRAGMAS:
                reader.execute(pragma)
            bulk = open_reader(path)
            # Each reads once now, so that it holds the WAL from here on: SQLite deletes the WAL beside a database
            # file it finds empty at a connection's first read, which a copy over the file (`cp` truncates it first)
            # made the daemon's (tests/test_database_lost_background.py).
            for conn in (reader, bulk):
                conn.execute(WAL_OPENED).fetchall()
            note_opened(path)  # (the identities a later opening tells this WAL by)
            made = cls(writer, reader, bulk, device_id, path)
        except BaseException:  # (each connection made so far: none kept open by an open refused part-way)
            for c in (bulk, reader, writer):
                if c is not None:
                    c.close()
            raise
        return made

    async def close(self) -> None:
        self._closing = True
        if self._scrubbing is not None:  # closing the last connection checkpoints the WAL and deletes it
            self._scrubbing.cancel()
        for task in (self._resetting, self._scrubbing):
            if task is not None:
                await asyncio.wait([task])
        async with self.group.lock:
            self.group.commit_batch()
        try:
            self.file.put_back(self._writer)
        except Exception:  # (a stop goes on: the error says what is left where)
            log.exception("%s was lost while the daemon ran, and could not be written back", self.path)
        kept_out = self.file.keep_out()  # overwritten in place: no close checkpoints into it
        wal_aside = self.file.wal_put_aside()  # a file put in the WAL's place: not deleted by the last close
        crash_at("close:held_aside")  # (tests: killed with those moved aside, not put back)
        self._bulk.shutdown(wait=True)
        self._off_loop.shutdown(wait=True)
        self._bulk_conn.close()
        self._checkpointer.close()
        self._reader.close()
        self._writer.close()
        if kept_out is not None:
            self.file.left_out(kept_out)
        if wal_aside is not None:
            self.file.wal_given_back(wal_aside)
        try:
            self.file.wal_left_aside()  # (the file no longer at its name: its WAL not left beside what is there now)
        except OSError:
            log.exception("%s's WAL could not be moved aside", self.path)

    # ------------------------------------------------------------------ writes
    def _check_file(self) -> None:
        """Before each COMMIT: the database file and its WAL still the ones opened (storage/dbfile.py), else the
        batch refused; a WAL deleted, what it holds is copied into the database file at once, by the background
        checkpoint (which a kill -9 then does not lose)."""
        try:
            self.file.check()
        except DatabaseLost:
            self._checkpointer.wake()
            raise

    async def file_lost(self) -> str | None:
        """DatabaseFile.lost() for doctor: between two write transactions, under the writer's lock (it reads
        the writer's data_version, which the search index's thread may be using meanwhile)."""
        await self.group.batch_done()
        async with self.group.lock:
            self.group.commit_batch()
            return self.file.lost()

    def transaction(self, lazy_savepoint: bool = False) -> Transacting:
        """A write transaction, in turn with every other write; it returns once it is committed, and its
        events go to the listeners then. Rolled back if the block raises (or is cancelled). Group-committed:
        storage/groupcommit.py (`lazy_savepoint`: its Transaction's)."""
        return self.group.transaction(lazy_savepoint)

    def hold_commit(self, point: str) -> None:
        """(The tests.) The commit of the transaction under way held at a pause point: GroupCommit.hold_commit."""
        self.group.hold_commit(point)

    @property
    def commits(self) -> int:
        """SQLite commits so far (statistics; each serves one or more transactions)."""
        return self.group.commits

    async def write(self, sql: str, args: tuple = ()) -> int:
        """One write statement on its own, in turn with the transactions."""
        async with self.transaction() as tx:
            n = await tx.execute(sql, args)
        return n

    async def write_off_loop(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """fn(writer) as a write transaction of its own, run on a thread, in turn with the other writes (the
        batch under way commits first, in its own turn, as in latest()); committed when it returns. For
        plain SQL that SQLite steps with the GIL released (the search index's chunks: FTS5 tokenizing and
        merging in C), so that the loop meanwhile reads and checks the next request instead of waiting
        inside the statement. No events; the writer is the thread's alone (the lock is held) until it ends,
        even if the caller is cancelled. The database file checked before its COMMIT as the group commit's
        (_check_file): DatabaseLost, nothing of it committed; SQLite failing on a file lost under the daemon is
        refused as that too (as in bulk)."""
        await self.group.batch_done()
        async with self.group.lock:
            self.group.commit_batch()
            loop = asyncio.get_running_loop()
            done = loop.run_in_executor(self._off_loop, run_transaction, self._writer, fn, self._check_file)
            try:
                result = await asyncio.shield(done)
            except asyncio.CancelledError:
                while not done.done():  # the lock is not let go while the thread still uses the writer
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait([done])
                raise
            except sqlite3.DatabaseError as exc:
                if (lost := self.as_lost(exc)) is exc:
                    raise
                raise lost from None
            self.group.count_commit()
            return result

    def _committed(self) -> None:
        """After each commit: wake the checkpointer once CHECKPOINT_ROWS rows have changed since it last
        ran (SQLite's count of changed rows stands in for the pages written to the WAL: it is free to read,
        and the stdlib has no WAL hook)."""
        changed = self._writer.total_changes
        if self.group.commits == 1 or changed - self._changes_mark >= CHECKPOINT_ROWS:  # the first: the WAL allocated
            self._changes_mark = changed
            self._checkpointer.wake()
        if self._checkpointer.frames >= self.wal_reset_frames and self._resetting is None:
            self._resetting = asyncio.get_running_loop().create_task(self._reset_wal())

    async def _reset_wal(self) -> None:
        """Start the WAL over (RESTART checkpoint), between two batches: the writer lock is held, so
        writers queue on it meanwhile and the event loop goes on (a writer blocked inside SQLite would
        hold it up, and hold a read lock the reset waits for). On a thread: it copies what the PASSIVE
        checkpoint just before it left, fsyncs, and has the next commit write the WAL from its start.
        RESTART, not TRUNCATE: freeing a 64 MB file's blocks made appends wait 30-40 ms; the file is
        reused instead, so it stays at most about WAL_RESET_FRAMES long. Readers still busy after
        WAL_RESET_WAIT_MS: tried again after the next checkpoint."""
        try:
            if await self._checkpoint_between_batches("RESTART"):
                self.wal_resets += 1
                self._checkpointer.frames = 0
        except sqlite3.Error as e:
            log.warning("WAL reset failed: %s", e)
        finally:
            self._resetting = None

    async def _checkpoint_between_batches(self, mode: str, wait_ms: int = WAL_RESET_WAIT_MS) -> bool:
        """A checkpoint in `mode` under the writer lock, between two batches; True if it did all of it.
        First a PASSIVE one without the lock: it copies (and fsyncs) nearly all the WAL while appends go
        on, so that the one under the lock has only the last few commits to copy (measured: appends waited
        30-40 ms for a reset that did it all)."""
        # (each on a connection opened by the database's name: none while the name no longer names the daemon's file)
        await asyncio.to_thread(checkpoint, self._path, "PASSIVE", WAL_RESET_WAIT_MS, self.file.by_name)
        async with self.group.lock:
            self.group.commit_batch()  # the batch under way, if any, first
            t = time.perf_counter()
            try:
                with self.file.own_reset():  # (its TRUNCATE moves the writer's data_version)
                    return await asyncio.to_thread(checkpoint, self._path, mode, wait_ms, self.file.by_name)
            finally:
                self.checkpoint_locked_ms = (time.perf_counter() - t) * 1000

    def deleted(self) -> None:
        """A delete was committed: its pages leave the WAL soon (scrub_soon), and the search index's purge
        waits for the deletes to stop coming (storage/search.py, PURGE_QUIET_S)."""
        self.deleted_at = time.monotonic()
        self.scrub_soon()

    def scrub_soon(self) -> None:
        """After a delete: copy the whole WAL into the database file (where secure_delete zeroed what was
        deleted) and truncate it, so that no file of the home keeps the deleted rows' pages. The WAL is
        otherwise reused, not truncated (see _reset_wal), and its old frames past the current end still
        hold every page written lately. Deletes in a row (a clean-up of many sessions) share one scrub: it
        starts once no delete came for SCRUB_QUIET_S (a truncation holds the writer for tens of ms)."""
        self._scrub_wanted = True
        if self._scrubbing is None:
            self._scrubbing = asyncio.get_running_loop().create_task(self._scrub())

    async def _scrub(self) -> None:
        tries = 0
        try:
            latest = time.monotonic() + SCRUB_LATEST_S
            while self._scrub_wanted:
                while (quiet := min(self.deleted_at + SCRUB_QUIET_S, latest) - time.monotonic()) > 0:
                    await asyncio.sleep(quiet)
                latest = time.monotonic() + SCRUB_LATEST_S
                self._scrub_wanted = False
                if self._resetting is not None:
                    await asyncio.wait([self._resetting])
                why = "readers stayed busy"
                try:
                    done = await self._checkpoint_between_batches("TRUNCATE", SCRUB_WAIT_MS)
                except sqlite3.Error as e:
                    done, why = False, str(e)
                if done:
                    self._checkpointer.truncated()
                    self.wal_scrubs += 1
                    tries = 0
                    continue
                # a reader still on an older snapshot (a push's long read), the background checkpoint
                # running, or a failure (a full disk): tried again, less and less often, until it is done;
                # the deleted pages stay in the WAL meanwhile
                if self._closing:  # (closing the last connection checkpoints the WAL and deletes it)
                    return
                lost = self.file.moved()
                if lost is not None:  # (its stop does what can be done: storage/dbfile.py)
                    log.warning("the WAL is not truncated after a delete: %s", self.file.said(lost))
                    return
                tries += 1
                if tries == SCRUB_TRIES:
                    log.warning("the WAL is not truncated yet after a delete (%s): trying again, less often", why)
                self._scrub_wanted = True
                await asyncio.sleep(min(SCRUB_RETRY_MAX_S, SCRUB_RETRY_S * 2 ** max(0, tries - SCRUB_TRIES)))
        finally:
            self._scrubbing = None

    def emit(self, events: Iterable[dict]) -> None:
        for ev in events:
            for fn in list(self.listeners):
                fn(ev)

    # ------------------------------------------------------------------ reads (see the read rule)
    async def latest(self, sql: str, args: tuple = ()) -> list[Row]:
        """The latest committed state, for the sync engine's bookkeeping: on the writer, between
        transactions (under the write lock), so it waits for a transaction under way and sees its end.
        Never call it inside a transaction (the lock is not re-entrant): read through the Transaction.

        A batch under way is left to its own flush, in its turn of the loop, rather than committed inside
        the caller's step: a push's first step, which did it, was the longest of its loop steps (~0.5 ms),
        the one an append arriving meanwhile waited behind (bench/results/profile-tail.md)."""
        await self.group.batch_done()
        async with self.group.lock:
            self.group.commit_batch()  # one begun since: what it reads is committed, the engine may push it at once
            self.refuse_reads()
            return self._writer.execute(sql, args).fetchall()

    async def bulk(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(connection, *args) in the bulk-read thread, on its own read-only connection; failing on a database file
        lost under the daemon (a shorter copy over it), refused as that (DatabaseLost), not as malformed pages."""
        self.refuse_reads()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._bulk, fn, self._bulk_conn, *args)
        except sqlite3.DatabaseError as exc:
            if (lost := self.as_lost(exc)) is exc:
                raise
            raise lost from None

    def refuse_reads(self) -> None:
        """Raise DatabaseLost if the database file is known to be overwritten in place (DatabaseFile.overwritten:
        a flag, no stat): what a read answers would mix what was put there with the daemon's pages. Every read of
        the read rule's looks (Committed, latest, bulk, a push's RunReader)."""
        if self.file.overwritten:
            raise self.file.read_error()

    def refuse_by_name(self) -> None:
        """Raise DatabaseLost before a connection is opened by the database's name (a push's RunReader) if the name
        no longer names the daemon's file, or the file is known overwritten (DatabaseFile.moved: any thread)."""
        what = self.file.moved()
        if what == OVERWRITTEN:
            raise self.file.read_error()
        if what is not None:
            raise self.file.error(what)

    def as_lost(self, exc: Exception) -> Exception:
        """`exc`, or the refusal to answer instead (DatabaseLost) if it is SQLite failing on a statement (malformed
        pages, an I/O error; not a constraint) because the database file was lost under the daemon (storage/dbfile.py:
        a shorter copy over it). The one rule for the bulk reader, the search index's thread and the API's answers
        (daemon/routes/failures.py). Any time, from the loop (not the data_version's look: lost's `by_version`; a
        write by SQLite breaks no page)."""
        if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, sqlite3.IntegrityError):
            return exc
        what = self.file.lost(by_version=False)
        return exc if what is None else self.file.error(what)
