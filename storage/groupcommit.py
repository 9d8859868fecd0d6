"""Group commit: the write transactions on the writer connection, and how they share SQLite's.

Writers take turns on an asyncio lock (a write transaction spans awaits: a statement from another coroutine
would otherwise land inside someone else's). The transactions of one turn of the event loop share one SQLite
transaction: each is a SAVEPOINT in it (undone alone if its block raises; the one that opens it needs none),
the first opens it (BEGIN IMMEDIATE) and schedules the COMMIT, which runs when the loop next gets to it,
after whatever else was ready to run and after the transactions then waiting for the writer. No caller goes
on before the commit its changes are in, so nothing is answered before it is on disk (kill -9 safe: WAL
mode, synchronous=NORMAL); under load, one commit serves many appends.

storage/connections.py owns the connections and hands the writer to a GroupCommit; what to do after each
commit (the checkpointer's wake-up, the listeners) is given to it as callbacks.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from .testhooks import pause_for_tests, pausing

Row = sqlite3.Row


def _batched_failed() -> sqlite3.OperationalError:
    """The error of a transaction rolled back with another of its batch that could not be undone alone."""
    return sqlite3.OperationalError("the write was rolled back with a transaction batched with it that failed")


class Transaction:
    """One write transaction on the writer, held by the coroutine that opened it (Connections.transaction).
    Its reads see its own writes; `emit` queues an event for the listeners, told after the commit.

    A later transaction of a batch is a SAVEPOINT in it, so that it can be undone alone. Opened with
    `lazy_savepoint` (the append's: Connections.transaction), the SAVEPOINT waits for the first statement
    that may write (a read needs no undoing: a refusal found by reads alone costs none), and `execute_alone`
    writes without one: a statement that fails changes nothing (SQLite undoes the statement), so a
    transaction whose only write is that statement, its last, needs no SAVEPOINT at all."""

    def __init__(self, conn: sqlite3.Connection, savepoint_due: bool = False):
        self._conn = conn
        self.events: list[dict] = []
        # True: a SAVEPOINT to open before the first write; False: opened, or none needed (the batch's first);
        # None: written by execute_alone without one (the transaction's last write: nothing more may be)
        self._due: bool | None = savepoint_due
        self.savepoint = False  # a SAVEPOINT was opened for it (to release, or roll back to)

    def _guard(self) -> None:
        if self._due:
            self._conn.execute("SAVEPOINT tx")
            self._due = False
            self.savepoint = True
        elif self._due is None:
            raise AssertionError("a write after execute_alone's, which must be the transaction's last")

    async def fetchall(self, sql: str, args: tuple = ()) -> list[Row]:
        if self._due is not False and not sql.startswith("SELECT"):  # (a statement that may write)
            self._guard()
        return self._conn.execute(sql, args).fetchall()

    async def fetchone(self, sql: str, args: tuple = ()) -> Row | None:
        if self._due is not False and not sql.startswith("SELECT"):
            self._guard()
        rows = self._conn.execute(sql, args).fetchall()
        return rows[0] if rows else None

    async def execute(self, sql: str, args: tuple = ()) -> int:
        """One statement; returns how many rows it changed."""
        if self._due is not False:
            self._guard()
        return self._conn.execute(sql, args).rowcount

    async def executemany(self, sql: str, rows: Iterable[tuple]) -> int:
        """One statement for many rows; returns how many rows it changed in all."""
        if self._due is not False:
            self._guard()
        return self._conn.executemany(sql, rows).rowcount

    async def execute_alone(self, sql: str, args: tuple = ()) -> int:
        """One statement that is the transaction's last write, and best the last thing its block does: with no
        SAVEPOINT opened before it none is, since a failed statement changes nothing. (If the block raises after
        it, nothing can undo it alone: the whole batch is rolled back, each of its callers told.)"""
        if self._due is None:
            raise AssertionError("a write after execute_alone's, which must be the transaction's last")
        if not self._due:
            return self._conn.execute(sql, args).rowcount
        changed = self._conn.execute(sql, args).rowcount  # (if it fails, nothing of it is written)
        self._due = None
        return changed

    def wrote_alone(self) -> bool:
        """Whether execute_alone wrote with no SAVEPOINT (a failure after it takes the whole batch with it)."""
        return self._due is None

    def emit(self, event: dict) -> None:
        self.events.append(event)


class Transacting:
    """`Connections.transaction()`'s context: a class, not an @asynccontextmanager (its generator and
    wrapper were ~5 us of every append). The transaction that opens a batch needs no SAVEPOINT: nothing
    else is in the batch while it holds the lock, so if it fails the whole SQLite transaction is undone
    (two statements fewer for every append that has the writer to itself, as one client's do)."""

    __slots__ = ("_batch", "_c", "_first", "_lazy", "_tx")

    def __init__(self, c: GroupCommit, lazy_savepoint: bool = False):
        self._c = c
        self._lazy = lazy_savepoint

    async def __aenter__(self) -> Transaction:
        c = self._c
        c.entering += 1  # (counted while it may wait: the scheduled COMMIT waits for those that do)
        try:
            await c.lock.acquire()
        finally:
            c.entering -= 1
        try:
            self._first = c.batch is None
            self._batch = c._join_batch()
            if self._first:
                self._tx = Transaction(c.writer)
            elif self._lazy:
                self._tx = Transaction(c.writer, savepoint_due=True)
            else:
                self._tx = Transaction(c.writer)
                c.writer.execute("SAVEPOINT tx")
                self._tx.savepoint = True
        except BaseException:
            c.lock.release()
            raise
        return self._tx

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        c = self._c
        try:
            if kind is not None:
                if self._first:
                    c._undo_batch()
                elif self._tx.savepoint:
                    c._undo_savepoint()
                elif self._tx.wrote_alone():  # its execute_alone's write, which no SAVEPOINT can undo alone
                    c._undo_batch(_batched_failed())
                else:  # nothing it wrote stands: reads only, or its execute_alone failed (undone by SQLite)
                    c._check_batch()
                return  # (None: the block's exception goes on)
            if self._tx.savepoint:
                c.writer.execute("RELEASE tx")
            # A future of this transaction's own, resolved by the batch's COMMIT itself: the caller goes on in
            # the next turn of the loop (through asyncio.shield of the batch, two turns later: the batch's
            # callback, then the shield's), and one cancelled leaves the others waiting on the batch alone.
            done = asyncio.get_running_loop().create_future()
            c._waiters.append(done)
        finally:
            c.lock.release()
        await done
        c.emit(self._tx.events)


class GroupCommit:
    """The writer's transactions, their turns on the lock and their shared COMMITs."""

    def __init__(
        self,
        writer: sqlite3.Connection,
        committed: Callable[[], None],
        emit: Callable[[Iterable[dict]], None],
        check: Callable[[], None] = lambda: None,
    ):
        self.writer = writer
        self._check = check  # before each COMMIT: raises to roll the batch back (the database file lost)
        self.lock = asyncio.Lock()
        self.batch: asyncio.Future[None] | None = None  # the SQLite transaction under way, if any
        self.entering = 0  # transactions waiting for the lock (_flush_soon)
        self.commits = 0  # SQLite commits so far (statistics; each serves one or more transactions)
        self._waiters: list[asyncio.Future[None]] = []  # its transactions' callers, told when it ends
        self._flusher: asyncio.Task[None] | None = None
        self._committed = committed  # after each commit (the checkpointer's wake-up)
        self.emit = emit  # a transaction's events, to the listeners after its commit
        self.held: str | None = None  # (the tests: the pause point the batch's commit waits at; hold_commit)

    def idle(self) -> bool:
        """Nothing is half done on the writer: no batch under way, no one holds it, nothing open on it."""
        return self.batch is None and not self.lock.locked() and not self.writer.in_transaction

    def transaction(self, lazy_savepoint: bool = False) -> Transacting:
        """A write transaction, in turn with every other write; it returns once it is committed, and its
        events go to the listeners then. Rolled back if the block raises (or is cancelled).

        Group commit: the transactions of one turn of the event loop share one SQLite transaction. Each
        is a SAVEPOINT in it (undone alone if its block raises); the first opens it (BEGIN IMMEDIATE)
        and schedules the COMMIT, which runs when the loop next gets to it, after whatever else was
        ready to run and after the transactions then waiting for the writer. No caller goes on before
        the commit its changes are in, so nothing is answered before it is on disk; under load, one
        commit serves many appends. `lazy_savepoint`: Transaction's."""
        return Transacting(self, lazy_savepoint)

    async def batch_done(self) -> None:
        """Wait for the batch under way, if any, to end (a failed batch is its callers' error, not this one's)."""
        batch = self.batch
        if batch is not None:
            await asyncio.wait([batch])

    def count_commit(self) -> None:
        """A commit made (a batch's, or write_off_loop's on its thread): counted, and its after-commit work done."""
        self.commits += 1
        self._committed()

    def hold_commit(self, point: str) -> None:
        """(The tests.) Called inside a transaction: if SESSIOND_TEST_PAUSE names `point`, the COMMIT of its
        batch waits there (storage/testhooks.py), the batch open meanwhile: what it wrote is not committed,
        reads of committed state do not see it, and transactions that come join it. Costs the flush one
        look at `held` when unset."""
        if pausing(point):
            self.held = point

    def _join_batch(self) -> asyncio.Future[None]:
        """The SQLite transaction under way, or a new one with its commit scheduled (under the lock)."""
        if self.batch is None:
            self.writer.execute("BEGIN IMMEDIATE")
            loop = asyncio.get_running_loop()
            self.batch = loop.create_future()
            loop.call_soon(self._flush_soon)
        return self.batch

    def _flush_soon(self) -> None:
        """The scheduled COMMIT: at once when no one holds the writer or waits for it (the common case: a
        task per batch cost an append ~10 us of CPU), else in a task that waits its turn for it. Those
        waiting go first (the lock is first come, first served): transactions that queued behind one that
        held the writer across turns of the loop (awaiting inside its block; the search index's chunk on
        its thread; a WAL reset) get it one per turn when it is let go, and so join this batch instead of
        each committing alone in the turn before the next one's."""
        if self.batch is None:  # committed meanwhile (close, a WAL reset)
            return
        if self.lock.locked() or self.entering or self.held is not None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        else:  # nothing is half done on the writer: whoever waits for the lock next starts a new batch
            self.commit_batch()

    async def _flush(self) -> None:
        while True:
            if self.held is not None:  # (the tests: a transaction of the batch holds its commit, hold_commit)
                point, self.held = self.held, None
                await pause_for_tests(point)
            async with self.lock:
                if self.held is None:  # (else one that had the writer first held it: that pause first)
                    self.commit_batch()
                    return

    def commit_batch(self) -> None:
        """COMMIT the transactions batched so far (under the lock), and tell their callers."""
        batch, self.batch = self.batch, None
        if batch is None:
            return
        try:
            if not self.writer.in_transaction:
                raise sqlite3.OperationalError("SQLite rolled the transaction back after an error")
            self._check()
            self.writer.execute("COMMIT")
        except BaseException as e:
            if self.writer.in_transaction:
                self.writer.execute("ROLLBACK")
            self._end_batch(batch, e)
            return
        self._end_batch(batch, None)
        self.count_commit()

    def _end_batch(self, batch: asyncio.Future[None], error: BaseException | None) -> None:
        """Tell the batch's waiters (`latest`, `write_off_loop`) and its transactions' callers how it ended."""
        waiters, self._waiters = self._waiters, []
        for fut in (batch, *waiters):
            if fut.done():  # a caller cancelled meanwhile
                continue
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)
                fut.exception()  # (retrieved: a batch whose callers were all cancelled logs nothing)

    def _undo_batch(self, error: BaseException | None = None) -> None:
        """Undo the transaction whose block raised and that opened the batch under way: it is the only one
        in it (it held the lock throughout), so the SQLite transaction goes whole and the scheduled commit
        finds nothing to do. With `error`: a later one's that cannot be undone alone (Transaction.wrote_alone),
        the batch's other transactions with it, each caller told `error`."""
        batch, self.batch = self.batch, None
        if self.writer.in_transaction:
            self.writer.execute("ROLLBACK")
        if batch is not None:
            self._end_batch(batch, error)  # (None: nothing to commit; a `latest` read may be waiting for it)

    def _undo_savepoint(self) -> None:
        """Undo the transaction whose block raised, and only it: the batch it is in goes on."""
        if self.writer.in_transaction:
            self.writer.execute("ROLLBACK TO tx")
            self.writer.execute("RELEASE tx")
            return
        self._check_batch()

    def _check_batch(self) -> None:
        """After a transaction of the batch failed: if SQLite rolled back the whole batch itself (a full disk, an
        I/O error), so are the others in it; else nothing to do."""
        if self.writer.in_transaction:
            return
        # SQLite rolled back the whole batch itself (a full disk, an I/O error): so are the others in it
        batch, self.batch = self.batch, None
        if batch is not None:
            self._end_batch(batch, _batched_failed())
