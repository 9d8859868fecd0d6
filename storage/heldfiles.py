"""The files a daemon's stop leaves beside the database when it was deleted, replaced or overwritten under the
daemon (storage/dbfile.py) and that a kill, or their nature, keeps there: put_back's temporary copies that a kill cut
short, what a stop killed part-way had moved aside while its connections closed, and the daemon's own WAL moved aside
when the database file was no longer at its name. Never deleted by sessiond (one may hold the only copy of a database,
or be the user's file); the start and doctor name each (`cut_copies`) and say what to do with it (`cut_copy_said`)."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time

# put_back's temporary file, after the database's name: .PID.tmp (to be the database), .held-TIME.PID.tmp (beside it)
_CUT_COPY = re.compile(r"(?:\.held-\d{8}T\d{6})?\.\d+\.tmp")
# what the stop moves aside while its connections close (keep_out, wal_put_aside), after the database's name
_HELD_ASIDE = re.compile(r"\.overwritten-hold\.\d+|-wal\.put-hold\.\d+")
# the daemon's own WAL, moved aside by its stop when the database file was no longer at its name (wal_left_name)
_WAL_LEFT = re.compile(r"-wal\.held-\d{8}T\d{6}(?:\.\d+)?")


def wal_left_name(path: str) -> str:
    """Where a stop moves the daemon's WAL of the database `path` once that file is no longer at its name (deleted or
    replaced: DatabaseFile.wal_left_aside): sessions.db-wal.held-TIME (.N if taken)."""
    base = f"{path}-wal.held-{time.strftime('%Y%m%dT%H%M%S')}"
    name, n = base, 1
    while os.path.lexists(name):
        name, n = f"{base}.{n}", n + 1
    return name


def cut_copies(path: str) -> list[str]:
    """The temporary files of put_back beside the database `path` that a kill cut short (sessions.db.PID.tmp,
    sessions.db.held-TIME.PID.tmp), and what a stop a kill cut short had moved aside while its connections closed
    (sessions.db.overwritten-hold.PID, sessions.db-wal.put-hold.PID: the user's files), and the daemon's own WAL its
    stop moved aside, the database file no longer at its name (sessions.db-wal.held-TIME). Never deleted: one may
    hold the only copy of a database deleted under a running daemon (its stop was writing it back), or be what the
    user put there."""
    folder, name = os.path.split(path)
    try:
        names = os.listdir(folder or ".")
    except FileNotFoundError:
        return []
    return sorted(
        os.path.join(folder, n)
        for n in names
        if n.startswith(name) and any(r.fullmatch(n[len(name) :]) for r in (_CUT_COPY, _HELD_ASIDE, _WAL_LEFT))
    )


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
    name = os.path.basename(path)
    suffix = os.path.basename(copy)[len(name) :]
    if _WAL_LEFT.fullmatch(suffix):
        said = (
            f"{copy} is the write-ahead log of the database a daemon held when {path} was deleted or replaced under"
            f" it, which that daemon's stop moved aside: left at {path}-wal, the next opening would have read its"
            f" writes as those of the file at {path} now (a copy put there undone, or two databases mixed). What it"
            f" held is in the copy that stop wrote ({path}, or {name}.held-TIME beside it); sessiond leaves it where"
            f" it is"
        )
        fix = (
            f"nothing reads it: delete it (rm {copy}) once {path} holds what you expect; never put it back beside"
            f" another file than the one it was the log of"
        )
        return said, fix
    if _HELD_ASIDE.fullmatch(suffix):  # (keep_out's or wal_put_aside's: the user's file, moved aside by a stop)
        where = path + "-wal" if suffix.startswith("-wal") else path
        said = (
            f"{copy} is the file put in the place of {where} while a daemon ran (not the daemon's own), which that"
            f" daemon's stop moved aside while its connections closed and was killed before putting back: sessiond"
            f" leaves it where it is"
        )
        fix = (
            f"with the daemon stopped (sessiond stop): move aside what is at {where} now, if anything (mv {where}"
            f" {where}.aside), and put this file back in its place (mv {copy} {where}), then sessiond start"
        )
        return said, fix
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
