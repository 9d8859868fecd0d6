"""The database file's identity while the daemon holds it open: deleted or replaced under a running daemon
(`rm sessions.db`, a backup copied over it), the file the daemon writes lives on only in its open
descriptors, and what it acknowledged then would be lost at the next start; its WAL deleted, every commit
since the last checkpoint is lost if the daemon does not stop cleanly. `DatabaseFile.lost()` tells it
(one stat), the group commit refuses every write from then on (storage/groupcommit.py), doctor names it,
and the daemon's stop writes the database it holds back in place (`put_back`). A kill during that write
leaves its temporary file (`cut_copies`): never deleted, it may hold the only copy of the database; the start
and doctor name it, and say what to do with it (`cut_copy_said`)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import time

from .errors import DatabaseLost, crash_at
from .fsutil import fsync_dir

log = logging.getLogger("sessiond.storage")


WAL_LOST = "WAL deleted"  # what lost() says of the WAL (sessions.db-wal) gone, the database file in place
# put_back's temporary file, after the database's name: .PID.tmp (to be the database), .held-TIME.PID.tmp (beside it)
_CUT_COPY = re.compile(r"(?:\.held-\d{8}T\d{6})?\.\d+\.tmp")


def cut_copies(path: str) -> list[str]:
    """The temporary files of put_back beside the database `path` that a kill cut short (sessions.db.PID.tmp,
    sessions.db.held-TIME.PID.tmp). Never deleted: one may hold the only copy of a database deleted under a
    running daemon (its stop was writing it back)."""
    folder, name = os.path.split(path)
    try:
        names = os.listdir(folder or ".")
    except FileNotFoundError:
        return []
    return sorted(os.path.join(folder, n) for n in names if n.startswith(name) and _CUT_COPY.fullmatch(n[len(name) :]))


def _whole(path: str) -> str:
    """Whether the copy at `path` reads as a whole SQLite database (opened read-only, nothing made beside it)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as conn:
            bad = [r[0] for r in conn.execute("PRAGMA quick_check(3)").fetchall() if r[0] != "ok"]
            n = conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
    except sqlite3.Error as exc:
        return f"it is not a whole database ({exc}): the kill came while it was written"
    if bad:
        return f"it is not a whole database ({'; '.join(bad)[:200]}): the kill came while it was written"
    return f"it reads as a whole database ({n} session{'s' if n != 1 else ''})"


def cut_copy_said(copy: str, path: str) -> tuple[str, str]:
    """What the start and doctor say of a copy cut_copies found beside the database `path`: (what it is, what
    to do)."""
    said = (
        f"{copy} is a copy of the database a daemon held open when {path} was deleted or replaced under it, which"
        f" that daemon's stop was writing when it was killed (before renaming it into place); {_whole(copy)}. It"
        f" may hold the only copy of those sessions: sessiond leaves it where it is"
    )
    fix = (
        f"with the daemon stopped (sessiond stop): look at it (sqlite3 {copy} 'PRAGMA integrity_check'); if it holds"
        f" what you miss, move {path} aside if there is one (mv {path} {path}.aside) and put this copy in its place"
        f" (mv {copy} {path}), then sessiond start; if not, delete it (rm {copy})"
    )
    return said, fix


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


class DatabaseFile:
    def __init__(self, path: str):
        self.path = path
        self.wal = path + "-wal"
        self._identity = _identity(path)
        # (SQLite keeps its WAL file while any connection is open: the one there now, made by the opening)
        self._wal_identity = _identity(self.wal)

    def lost(self) -> str | None:
        """None while `path` and its WAL are still the files opened; else what became of them ("deleted",
        "replaced by another file", or WAL_LOST: the WAL deleted or replaced, the database file in place)."""
        now = _identity(self.path)
        if now is None:
            return "deleted"
        if now != self._identity:
            return "replaced by another file"
        if self._wal_identity is None:
            self._wal_identity = _identity(self.wal)  # (none at the opening: the first one made is the one)
            return None
        return None if _identity(self.wal) == self._wal_identity else WAL_LOST

    def said(self, what: str) -> str:
        """The file being `what` (lost()) said, as doctor and a refused write say it."""
        if what == WAL_LOST:
            return (
                f"{self.wal}, the write-ahead log of {self.path}, was deleted or replaced while the daemon ran (the"
                " daemon writes to the file it opened, now in no folder)"
            )
        return (
            f"{self.path} was {what} while the daemon ran (the daemon writes to the file it opened, now in no folder)"
        )

    def error(self, what: str) -> DatabaseLost:
        """The refusal of a write while the file is `what` (lost()), saying what the stop will do."""
        if what == WAL_LOST:
            return DatabaseLost(
                f"{self.said(what)}: a write now would be acknowledged and then lost if the daemon does not stop"
                f" cleanly, so none is taken; nothing of this request was stored. What it held is copied into"
                f" {self.path} now; restart the daemon (`sessiond stop`, then start it again) to write again"
            )
        return DatabaseLost(
            f"{self.said(what)}: a write now would be acknowledged and then lost, so none"
            f" is taken; nothing of this request was stored. Stop the daemon (`sessiond stop`): it then writes the"
            f" database it holds open {self._put_where(what)}; start it again after that"
        )

    def _put_where(self, what: str) -> str:
        return f"back to {self.path}" if what == "deleted" else f"beside it as {os.path.basename(self.path)}.held-TIME"

    def check(self) -> None:
        """Raise DatabaseLost if the file was deleted or replaced (the group commit, before each COMMIT)."""
        what = self.lost()
        if what is not None:
            raise self.error(what)

    def put_back(self, conn: sqlite3.Connection) -> str | None:
        """At close, if the file was lost: the database `conn` holds written whole (SQLite's backup), through a
        temporary file renamed in place, to `path` if deleted (nothing lost), or beside the file that replaced
        it, which is left as it is. Returns where, or None if the file was never lost."""
        what = self.lost()
        if what is None:
            return None
        if what == WAL_LOST:  # (the database file is in place: closing the last connection checkpoints into it)
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
