"""The database file's identity while the daemon holds it open: deleted or replaced under a running daemon
(`rm sessions.db`, a backup copied over it), the file the daemon writes lives on only in its open
descriptors, and what it acknowledged then would be lost at the next start; its WAL deleted, every commit
since the last checkpoint is lost if the daemon does not stop cleanly. `DatabaseFile.lost()` tells it
(one stat), the group commit refuses every write from then on (storage/groupcommit.py), doctor names it,
and the daemon's stop writes the database it holds back in place (`put_back`). Overwritten in place (`cp
backup.db sessions.db`: the same inode, new content), which only a checkpoint of the daemon's may do (the
database file's size and modification time are kept as each left them: `checkpointing`), or written by another program
through SQLite (the writer's PRAGMA data_version): refused as well, and nothing of the daemon's is written into
it from then on, its stop neither (`put_back`). A kill during that write
leaves its temporary file (heldfiles.py `cut_copies`): never deleted, it may hold the only copy of the database; the
start and doctor name it, and say what to do with it (`cut_copy_said`). Deleted or replaced, the daemon's WAL, which
SQLite leaves at its name, is moved aside once the connections closed (`wal_left_aside`), named so too."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator

from .errors import DatabaseLost, crash_at
from .fsutil import fsync_dir, sqlite_ro_uri
from .heldfiles import file_identity as _identity
from .heldfiles import file_stat as _stat
from .heldfiles import move_wal_aside

log = logging.getLogger("sessiond.storage")


WAL_LOST = "WAL deleted"  # what lost() says of the WAL (sessions.db-wal) gone, the database file in place
OVERWRITTEN = "overwritten in place"  # ... of its content changed by no checkpoint of the daemon's (a cp over it)
WRITTEN_ELSEWHERE = "written by another program"  # ... of another connection's commit (PRAGMA data_version)


def _content(st: os.stat_result | None) -> tuple[int, int] | None:
    """What an in-place write to the file changes: its size and modification time (not its change time,
    which a chmod moves too)."""
    return None if st is None else (st.st_size, st.st_mtime_ns)


class DatabaseFile:
    """`writer`: the daemon's writer connection, whose PRAGMA data_version moves when another connection
    commits; the daemon's other connections never do (its reader and bulk thread only read), and its
    checkpoints' TRUNCATE (a WAL started over by another connection) is taken as its own (`own_reset`)."""

    def __init__(self, path: str, writer: sqlite3.Connection | None = None):
        self.path = path
        self.wal = path + "-wal"
        self._identity = _identity(path)
        # (SQLite keeps its WAL file while any connection is open: the one there now, made by the opening)
        self._wal_identity = _identity(self.wal)
        self._writer = writer
        self._version = self._data_version()
        # the file never shrinks (no VACUUM runs), unless made to vacuum itself at each commit (auto_vacuum=FULL, 1:
        # set when a file is made, by the SQLite build's default or another tool): then a checkpoint may shrink it.
        # INCREMENTAL (2) shrinks it only at a PRAGMA incremental_vacuum, which sessiond never runs: as NONE (0)
        self._shrinks = writer is not None and writer.execute("PRAGMA auto_vacuum").fetchone()[0] == 1
        # the database file as the last of the daemon's checkpoints left it (in WAL mode only they write it)
        self._lock = threading.Lock()  # (checkpoints run on threads of their own)
        self._content = _content(_stat(path))
        self._checkpoints = 0  # running: the file's content may be moving
        # the least the file holds (a checkpoint that copied the whole WAL back sizes it to the database's pages,
        # which never shrink but with auto_vacuum=FULL): one shorter after a checkpoint is a copy over it (at_least)
        self._floor = 0
        self._changed: str | None = None  # OVERWRITTEN or WRITTEN_ELSEWHERE once seen: for good
        # OVERWRITTEN seen (for good): what the file holds is neither database whole, so reads are refused too
        # (Connections: a look at this flag per read, no stat; read_error)
        self.overwritten = False

    def _data_version(self) -> int | None:
        if self._writer is None:
            return None
        return self._writer.execute("PRAGMA data_version").fetchone()[0]

    def lost(self, by_version: bool = True) -> str | None:
        """None while `path` and its WAL are still the files opened, written by the daemon alone; else what
        became of them ("deleted", "replaced by another file", WAL_LOST: the WAL deleted or replaced, the database
        file in place, OVERWRITTEN or WRITTEN_ELSEWHERE). `by_version` False: not the writer's data_version, which
        only a look between two of the daemon's writes under the writer's lock may compare (the daemon's own
        TRUNCATE moves it, and own_reset takes the new one only at its end): a failed statement's look."""
        st = _stat(self.path)  # (one stat: the identity and the content)
        if st is None:
            return "deleted"
        if (st.st_dev, st.st_ino) != self._identity:
            return "replaced by another file"
        wal_lost = False
        if self._wal_identity is None:
            self._wal_identity = _identity(self.wal)  # (none at the opening: the first one made is the one)
        else:
            wal_lost = _identity(self.wal) != self._wal_identity
        unversioned = wal_lost or not by_version or self._version is None  # (the WAL lost: not looked at, as before)
        if not unversioned and self._changed is None and self._data_version() != self._version:
            self._changed = WRITTEN_ELSEWHERE
        if self._changed is None and _content(st) != self._content:
            # (looked at again under the lock: one of the daemon's checkpoints may have ended since `st`, keeping
            # what it left, which `st` is older than; read as a copy over the file, it refused every write)
            with self._lock:
                self._overwritten(_stat(self.path))
        if wal_lost and self._changed != OVERWRITTEN:
            # (overwritten and its WAL removed, a restore by hand: OVERWRITTEN, so that nothing of the daemon's is
            # written into the copy, as WAL_LOST's stop does into the file it takes for the daemon's)
            return WAL_LOST
        return self._changed

    def moved(self) -> str | None:
        """What lost() says of the names alone ("deleted", "replaced by another file", WAL_LOST), or OVERWRITTEN
        once seen; None while they still name the files the daemon opened. From any thread (stats and a flag, not
        the writer's data_version). Before a connection opened by the database's name (a reset's or a scrub's
        checkpoint, a push's reader): with the file deleted it would make an empty one there, with it replaced read
        what was put there, each with the daemon's WAL and wal-index beside it."""
        st = _stat(self.path)
        if st is None:
            return "deleted"
        if (st.st_dev, st.st_ino) != self._identity:
            return "replaced by another file"
        if self.overwritten:  # (before the WAL, as lost() says it: a copy put there with the WAL removed)
            return OVERWRITTEN
        if self._wal_identity is not None and _identity(self.wal) != self._wal_identity:
            return WAL_LOST
        # Empty: a copy over it under way (`cp` truncates first). The daemon's never is, once open (journal_mode=WAL
        # writes its first page), and a connection whose first read finds it empty deletes the WAL beside it.
        return OVERWRITTEN if st.st_size == 0 else None

    @contextlib.contextmanager
    def by_name(self) -> Iterator[bool]:
        """`checkpointing`, for a checkpoint on a connection opened by the database's name: False as well while
        the names no longer name the files the daemon opened (`moved`)."""
        if self.moved() is not None:
            yield False
            return
        with self.checkpointing() as go:
            yield go

    def _overwritten(self, st: os.stat_result | None) -> None:
        """(self._lock held.) The file (`st`: its stat now), still the one opened, changed by none of the
        daemon's checkpoints."""
        changed = _content(st) != self._content
        # (a checkpoint running may be moving the content, but never makes the file shorter: seen at once, not at
        # its end, for a read meeting the copy's missing pages meanwhile asks now)
        moved = self._changed is None and changed and (self._checkpoints == 0 or self._shrunk(st))
        if moved and st is not None and (st.st_dev, st.st_ino) == self._identity:  # (else lost() says what)
            self._changed = OVERWRITTEN
            self.overwritten = True

    def _shrunk(self, st: os.stat_result | None) -> bool:
        """(self._lock held.) The file (`st`) shorter than the daemon's checkpoints ever leave it (_left)."""
        least = max(self._floor, self._content[0] if self._content is not None else 0)
        return not self._shrinks and st is not None and st.st_size < least

    @contextlib.contextmanager
    def checkpointing(self) -> Iterator[bool]:
        """Around each of the daemon's checkpoints (any thread): False if the file's content changed since the
        last one left it (a copy over it: the checkpoint must not write the daemon's pages into that), else
        True, and what it leaves is the file's content from then on."""
        with self._lock:
            self._overwritten(_stat(self.path))
            if self._changed == OVERWRITTEN:
                yield False
                return
            self._checkpoints += 1
        try:
            yield True
        finally:
            with self._lock:
                self._checkpoints -= 1
                if self._checkpoints == 0:
                    self._left(_stat(self.path))

    def at_least(self, size: int) -> None:
        """(Inside checkpointing, on the checkpoint's thread.) A checkpoint that copied the whole WAL back left the
        file `size` bytes at least: the database's pages as it began (SQLite sizes the file to them), so a copy
        shorter than that landing during it (its last fsync: most of its time) is seen, however long the file the
        checkpoint before left."""
        with self._lock:
            self._floor = max(self._floor, size)

    def _left(self, st: os.stat_result | None) -> None:
        """(self._lock held.) The file as the last of the daemon's checkpoints running left it: its content from
        then on, unless it is shorter than before, which no checkpoint of the daemon's makes (nothing runs VACUUM:
        the database never shrinks, its freed pages stay in the file; but one made with auto_vacuum=FULL), a copy
        over it meanwhile; nor shorter than the database's pages a whole checkpoint sized it to (at_least). (A copy
        as long or longer meanwhile is taken for the checkpoint's writes: unseen.)"""
        now = _content(st)
        if self._shrunk(st) and st is not None and (st.st_dev, st.st_ino) == self._identity and self._changed is None:
            self._changed = OVERWRITTEN
            self.overwritten = True
            return
        self._content = now

    @contextlib.contextmanager
    def own_reset(self) -> Iterator[None]:
        """Around a RESTART or TRUNCATE checkpoint of the daemon's, with no write under way (the writer's lock
        held): it starts the WAL over from another connection, which moves the writer's data_version. Taken as
        the daemon's own, unless another program had written before it."""
        before = self._data_version() == self._version
        yield
        if before and self._changed is None:
            self._version = self._data_version()

    def said(self, what: str) -> str:
        """The file being `what` (lost()) said, as doctor and a refused write say it."""
        if what == WAL_LOST:
            return (
                f"{self.wal}, the write-ahead log of {self.path}, was deleted or replaced while the daemon ran (the"
                " daemon writes to the file it opened, now in no folder)"
            )
        if what == OVERWRITTEN:
            return (
                f"{self.path} was overwritten in place while the daemon ran (a backup copied over it?): its size or"
                " modification time moved outside the daemon's own checkpoints, so the file the daemon has open may"
                " now hold what was put there, not the database the daemon knows (a `touch`, a tool restoring times"
                " or another program's checkpoint of the daemon's WAL move them too, and are taken for a copy)"
            )
        if what == WRITTEN_ELSEWHERE:
            return (
                f"{self.path} was written by another program while the daemon ran (a backup restored into it"
                " through SQLite? a write, or a checkpoint of its WAL with RESTART or TRUNCATE, which SQLite tells"
                " the daemon of as it tells a write): the daemon's view of it is no longer what it holds"
            )
        return (
            f"{self.path} was {what} while the daemon ran (the daemon writes to the file it opened, now in no folder)"
        )

    def error(self, what: str) -> DatabaseLost:
        """The refusal of a write while the file is `what` (lost()), saying what the stop will do; its way on,
        the daemon's owner's (a stop, a start), in `details.owner` too."""
        if what == WAL_LOST:
            way = "restart the daemon (`sessiond stop`, then start it again) to write again"
            return DatabaseLost(
                f"{self.said(what)}: a write now would be acknowledged and then lost if the daemon does not stop"
                f" cleanly, so none is taken; nothing of this request was stored. What it held is copied into"
                f" {self.path} now; {way}",
                owner=[way],
            )
        if what in (OVERWRITTEN, WRITTEN_ELSEWHERE):
            return DatabaseLost(
                f"{self.said(what)}: a write now would mix the daemon's pages into it, so none is taken; nothing of"
                f" this request was stored. {self.fix(what)}",
                owner=[self.fix(what)],
            )
        way = f"{self.fix(what)}; start it again after that"
        return DatabaseLost(
            f"{self.said(what)}: a write now would be acknowledged and then lost, so none"
            f" is taken; nothing of this request was stored. {way}",
            owner=[way],
        )

    def read_error(self) -> DatabaseLost:
        """The refusal of a read once the file is known to be overwritten in place (`overwritten`): its pages are
        now what was put there, under the daemon's WAL and page caches, a mix of two databases. (Deleted or
        replaced, the daemon still reads the database it holds open, whole: those reads are answered.)"""
        return DatabaseLost(
            f"{self.said(OVERWRITTEN)}: what a read answers now may mix what was put there with the daemon's"
            f" pages, so no read is answered either; nothing was changed. {self.fix(OVERWRITTEN)}",
            owner=[self.fix(OVERWRITTEN)],
        )

    def fix(self, what: str) -> str:
        """What to do about the file being `what` (lost()), as doctor and a refused write say it."""
        if what == OVERWRITTEN:
            return (
                f"Stop the daemon (`sessiond stop`): it leaves {self.path} as it is now, and moves its own log of"
                f" the writes since its last checkpoint aside ({os.path.basename(self.wal)}.overwritten-TIME); start"
                " it again after that. If nothing was copied over the file (only a `touch`, or another program's"
                f" checkpoint), move that log back to {os.path.basename(self.wal)} before the start, and those"
                " writes are read again; never after a copy. Stop the daemon before restoring a backup"
            )
        if what == WAL_LOST:
            return "Restart the daemon (`sessiond stop`, then start it again) to write again"
        if what == WRITTEN_ELSEWHERE:
            return (
                "Restart the daemon (`sessiond stop`, then start it again) to write again. Stop the daemon before"
                " restoring a backup or writing to its database; while it runs, open it read-only, if at all"
                f" (sqlite3 'file:{self.path}?mode=ro')"
            )
        return f"Stop the daemon (`sessiond stop`): it then writes the database it holds open {self._put_where(what)}"

    def _put_where(self, what: str) -> str:
        return f"back to {self.path}" if what == "deleted" else f"beside it as {os.path.basename(self.path)}.held-TIME"

    def check(self) -> None:
        """Raise DatabaseLost if the file was deleted or replaced (the group commit, before each COMMIT)."""
        what = self.lost()
        if what is not None:
            raise self.error(what)

    def keep_out(self) -> sqlite3.Connection | str | None:
        """At close, before the daemon's connections close, if the file was overwritten in place: a read-only
        connection in a read transaction, so that none of them, closing, checkpoints the WAL into what was put
        there (the last connection to close checkpoints, if it can lock the file alone); else None. Given to
        `left_out` once they are closed. What was put there no database SQLite reads (no read lock to take):
        its name moved aside meanwhile, returned (SQLite checkpoints nothing at a close into a database file
        no longer at its name)."""
        if self.lost() != OVERWRITTEN:
            return None
        conn = sqlite3.connect(sqlite_ro_uri(self.path), uri=True, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("BEGIN")
            conn.execute("PRAGMA schema_version").fetchone()  # (a read: the read lock taken)
        except sqlite3.Error as exc:
            conn.close()
            why = str(exc)
        else:
            return conn
        hidden = f"{self.path}.overwritten-hold.{os.getpid()}"
        log.error(
            "%s was overwritten in place while the daemon ran by what is no SQLite database (%s): moved to %s while"
            " the daemon's connections close, and back then (if this stop is cut short: `mv %s %s`)",
            self.path,
            why,
            hidden,
            hidden,
            self.path,
            extra={"event": "database_lost"},
        )
        os.rename(self.path, hidden)
        return hidden

    def left_out(self, kept: sqlite3.Connection | str) -> str:
        """keep_out's connection closed (read-only: no checkpoint), or the file's name moved back, and the WAL,
        the daemon's writes since its last checkpoint, moved aside: read at the next start as the file's own,
        its pages would be written into what was put there. Returns where it went."""
        if isinstance(kept, sqlite3.Connection):
            kept.close()
        aside = f"{self.wal}.overwritten-{time.strftime('%Y%m%dT%H%M%S')}"
        try:
            os.rename(self.wal, aside)
            where = f"the daemon's WAL moved to {aside}"
        except FileNotFoundError:  # (removed with the copy: a restore by hand)
            where = f"its WAL ({self.wal}) was removed while it ran, nothing moved aside"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path + "-shm")  # (the WAL's index: made again from the WAL there is, none)
        if isinstance(kept, str):
            os.rename(kept, self.path)
        fsync_dir(os.path.dirname(self.path) or ".")
        log.error(
            "%s was overwritten in place while the daemon ran: left as it is; %s",
            self.path,
            where,
            extra={"event": "database_lost"},
        )
        return aside

    def wal_put_aside(self) -> str | None:
        """At close, before the daemon's connections close: a file put in the WAL's place while the daemon ran (not
        the WAL it opened) moved aside while they close, since the last of them deletes the WAL by its name; its name
        meanwhile, for `wal_given_back`, or None."""
        now = _identity(self.wal)
        if self._wal_identity is None or now is None or now == self._wal_identity:
            return None
        hidden = f"{self.wal}.put-hold.{os.getpid()}"
        said = f"{self.wal} is not the daemon's WAL (put there while it ran): moved to {hidden} while the daemon's"
        way = f"connections close, and back then (if this stop is cut short: `mv {hidden} {self.wal}`)"
        log.error("%s %s", said, way, extra={"event": "database_lost"})
        os.rename(self.wal, hidden)
        return hidden

    def wal_left_aside(self) -> str | None:
        """After the daemon's connections closed: the database file no longer at its name (deleted, or replaced by
        another file), SQLite neither checkpointed the daemon's WAL at the last close nor deleted it, nor its index:
        left beside what is at the name now (put_back's copy, or the file put there), the next opening would read the
        daemon's frames as that file's own. Moved aside (heldfiles.wal_left_name: named by the start and doctor),
        its index deleted (rebuilt from the WAL there is: none); what it held is in put_back's copy. Its new name,
        or None (the file at its name, or no WAL of the daemon's there: one put in its place is the user's)."""
        if _identity(self.path) == self._identity or self._wal_identity is None:
            return None
        if _identity(self.wal) != self._wal_identity:
            return None
        return move_wal_aside(self.path, "the database the daemon held was no longer at its name")

    def wal_given_back(self, hidden: str) -> None:
        """wal_put_aside's file back in the WAL's place, the daemon's connections closed."""
        os.rename(hidden, self.wal)
        fsync_dir(os.path.dirname(self.wal) or ".")

    def put_back(self, conn: sqlite3.Connection) -> str | None:
        """At close, if the file was lost: the database `conn` holds written whole (SQLite's backup), through a
        temporary file renamed in place, to `path` if deleted (nothing lost), or beside the file that replaced
        it, which is left as it is. Returns where, or None if the file was never lost."""
        what = self.lost()
        if what is None or what == OVERWRITTEN:  # (that one: keep_out)
            return None
        if what == WRITTEN_ELSEWHERE:  # (through SQLite: the file is whole, the daemon's commits in it too)
            log.error("%s", self.said(what), extra={"event": "database_lost"})
            return None
        if what == WAL_LOST:  # (the database file is in place: closing the last connection checkpoints into it)
            with self.checkpointing() as go:  # (not into a copy put over it since lost())
                if go:
                    conn.execute("PRAGMA wal_checkpoint(FULL)")
            log.error("%s", self.said(what), extra={"event": "database_lost"})
            return self.path
        dest = self.path if what == "deleted" else f"{self.path}.held-{time.strftime('%Y%m%dT%H%M%S')}"
        tmp = f"{dest}.{os.getpid()}.tmp"
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        try:
            out = sqlite3.connect(tmp)
            try:
                conn.backup(out)
                out.execute("PRAGMA journal_mode=DELETE")  # one file, no WAL beside it to lose
            finally:
                out.close()
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            crash_at("put_back:written")  # (tests: killed with the copy written, not renamed into place)
            os.rename(tmp, dest)
            fsync_dir(os.path.dirname(dest) or ".")
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        log.error(
            "%s was %s while the daemon ran: the database it held is written to %s",
            self.path,
            what,
            dest,
            extra={"event": "database_lost"},
        )
        return dest
