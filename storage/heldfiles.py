"""The files a daemon's stop leaves beside the database when it was deleted, replaced or overwritten under the
daemon (storage/dbfile.py) and that a kill, or their nature, keeps there: put_back's temporary copies that a kill cut
short, what a stop killed part-way had moved aside while its connections closed, and the daemon's own WAL moved aside
when the database file was no longer at its name. Never deleted by sessiond (one may hold the only copy of a database,
or be the user's file); the start and doctor name each (`cut_copies`) and say what to do with it (`cut_copy_said`)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import time

from .fsutil import atomic_write, fsync_dir, read_small, sqlite_ro_uri

log = logging.getLogger("sessiond.storage")

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


def file_stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def file_identity(path: str) -> tuple[int, int] | None:
    st = file_stat(path)
    return None if st is None else (st.st_dev, st.st_ino)


def move_wal_aside(path: str, why: str) -> str:
    """The WAL beside the database `path` (the daemon's, of another file than the one at `path` now: `why`) moved
    aside (wal_left_name), and its index deleted (rebuilt from the WAL there is: none): left there, the next opening
    would read its frames as the file's own. Its new name, which the start and doctor say (cut_copies)."""
    aside = wal_left_name(path)
    os.rename(path + "-wal", aside)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path + "-shm")
    fsync_dir(os.path.dirname(path) or ".")
    log.error(
        "%s: its WAL, %s, is not the log of the file there now and is moved to %s (left there, the next opening would"
        " read the daemon's writes into that file)",
        why,
        path + "-wal",
        aside,
        extra={"event": "database_lost"},
    )
    return aside


def note_opened(path: str) -> None:
    """The identities of the database file `path` and its WAL as an opening left them, noted beside it
    (sessions.db.opened): what the next opening tells the WAL of a daemon killed after its file was replaced or
    deleted under it (no stop moved it aside: wal_of_another) from the file's own WAL."""
    db, wal = file_identity(path), file_identity(path + "-wal")
    if db is None or wal is None:
        return
    try:
        # (not synced: what it serves is a kill's, not a power loss's; a note lost or old matches no WAL, and is none)
        atomic_write(path + ".opened", json.dumps({"db": db, "wal": wal}).encode(), sync=False)
    except OSError as exc:  # (an aid, not the opening's: a note of another WAL is no match, and none is none)
        log.warning("could not note the database's identity in %s.opened: %s", path, exc)


def another_files_wal(path: str) -> bool:
    """Whether the WAL beside the database `path` is the very one the last opening noted (note_opened), with another
    file at `path` than the one noted: a daemon killed after its file was replaced or deleted under it."""
    try:
        note = json.loads(read_small(path + ".opened"))
        noted = (tuple(note["db"]), tuple(note["wal"]))
    except (OSError, ValueError, KeyError, TypeError):  # (none yet, or not one this wrote: nothing to tell)
        return False
    wal = file_identity(path + "-wal")
    return wal is not None and wal == noted[1] and file_identity(path) != noted[0]


def wal_of_another(path: str) -> str | None:
    """Before an opening of the database `path`: the WAL beside it another file's (another_files_wal) moved aside
    (move_wal_aside). Where it went, or None (no note, no WAL, or the WAL the file's own)."""
    if not another_files_wal(path):
        return None
    return move_wal_aside(path, f"{path} is not the file the last daemon opened (killed after it was replaced?)")


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
        with contextlib.closing(sqlite3.connect(sqlite_ro_uri(path, immutable=True), uri=True)) as conn:
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
            f" it, moved aside by that daemon's stop (or, the daemon killed, by the next start): left at {path}-wal,"
            f" the next opening would have read its writes as those of the file at {path} now (a copy put there"
            f" undone, or two databases mixed). What it held is in the copy a stop wrote ({path}, or {name}.held-TIME"
            f" beside it; none if the daemon was killed); sessiond leaves it where it is"
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
