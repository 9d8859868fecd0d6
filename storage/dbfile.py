"""The database file's identity while the daemon holds it open: deleted or replaced under a running daemon
(`rm sessions.db`, a backup copied over it), the file the daemon writes lives on only in its open
descriptors, and what it acknowledged then would be lost at the next start. `DatabaseFile.lost()` tells it
(one stat), the group commit refuses every write from then on (storage/groupcommit.py), doctor names it,
and the daemon's stop writes the database it holds back in place (`put_back`)."""

from __future__ import annotations

import logging
import os
import sqlite3
import time

from .errors import DatabaseLost
from .fsutil import fsync_dir

log = logging.getLogger("sessiond.storage")


class DatabaseFile:
    def __init__(self, path: str):
        self.path = path
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)

    def lost(self) -> str | None:
        """None while `path` is still the file opened; else what became of it ("deleted", "replaced")."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return "deleted"
        return None if (st.st_dev, st.st_ino) == self._identity else "replaced by another file"

    def said(self, what: str) -> str:
        """The file being `what` (lost()) said, as doctor and a refused write say it."""
        return (
            f"{self.path} was {what} while the daemon ran (the daemon writes to the file it opened, now in no folder)"
        )

    def error(self, what: str) -> DatabaseLost:
        """The refusal of a write while the file is `what` (lost()), saying what the stop will do."""
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
