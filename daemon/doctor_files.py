"""`doctor`'s checks of the home on disk, which need no daemon: the folders private (0700), the socket
and every secret file 0600 and yours, the key files present and well formed. The daemon runs them as
part of GET /v1/doctor; the CLI runs them itself when no daemon answers.

A finding is {"check", "level" (ok, warn or problem), "message", "fix"}: `fix` is the exact command
that fixes it (None when nothing needs fixing).
"""

from __future__ import annotations

import os
import sqlite3
import stat

from ..api.locate import socket_path
from ..storage.fsutil import sqlite_ro_uri
from ..storage.heldfiles import another_files_wal, cut_copies, cut_copy_said

KEY_SIZE = 32  # device.key, <session>.key and <session>.write: 32 bytes; <session>.old: 32 bytes per old key
SECRET_FILES = (
    "openai-api-key",
    "pinning-token",
    "kubo-auth",
    "store-url",
    "keys/store-credentials",
    # not keys, but every conversation on the device (and the words of its search index), and the logs
    "sessions.db",
    "sessions.db-wal",
    "sessions.db-shm",
)  # under the home, 0600 (and every file of SECRET_FOLDERS)
SECRET_FOLDERS = ("store-tokens", "logs")
PRIVATE_DIRS = ("", "keys", "keys/sessions", "logs", "store-tokens", "pinning")  # under the home, 0700


def finding(check: str, level: str, message: str, fix: str | None = None) -> dict:
    return {"check": check, "level": level, "message": message, "fix": fix}


def _mode_problem(check: str, path: str, st: os.stat_result, want: int, what: str) -> dict | None:
    if st.st_uid != os.getuid():
        return finding(check, "problem", f"{what} {path} is owned by uid {st.st_uid}, not you", f"chown $USER {path}")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return finding(
            check,
            "problem",
            f"{what} {path} is open to group or others (mode {mode:04o}, want {want:04o})",
            f"chmod {want:o} {path}",
        )
    return None


def check_home(home: str) -> list[dict]:
    """Every check of the home's files, in order: folders, socket, keys, secret files."""
    if not os.path.isdir(home):
        return [
            finding(
                "home",
                "warn",
                f"the home folder {home} does not exist yet (no daemon has run here)",
                f"sessiond start --home {home}",
            )
        ]
    return [*_check_dirs(home), *_check_socket(home), *_check_keys(home), *_check_secrets(home), *_cut_copies(home)]


def _cut_copies(home: str) -> list[dict]:
    """A copy of the database that a daemon's stop was writing back when it was killed (storage/dbfile.py)."""
    return [
        finding("database", "warn", *cut_copy_said(c, os.path.join(home, "sessions.db")))
        for c in cut_copies(os.path.join(home, "sessions.db"))
    ]


def check_wal_of_another(home: str) -> list[dict]:
    """A stopped home's sessions.db-wal that is the log of another file than sessions.db (a daemon killed after its
    database was replaced under it): the next start moves it aside, which reading the database meanwhile does not."""
    db = os.path.join(home, "sessions.db")
    if not another_files_wal(db):
        return []
    said = (
        f"{db}-wal is the write-ahead log of the database the last daemon opened, which is no longer {db} (a file"
        f" was put in its place, and that daemon was killed before its stop could move its log aside): read with"
        f" {db}, its writes would be taken for that file's"
    )
    return [finding("database", "warn", said, f"sessiond start --home {home}  # moves it aside first, named")]


SQLITE_MAGIC = b"SQLite format 3\x00"


def check_database(home: str) -> list[dict]:
    """sessions.db readable by this sessiond: an SQLite database, not written by a newer sessiond, every
    page well formed (PRAGMA quick_check: it reads the whole file). Opened read-only; for a home whose
    daemon is stopped (a running daemon's database is open and working)."""
    path = os.path.join(home, "sessions.db")
    restore = (
        f"restore {path} from a backup, or move it aside (mv {path} {path}.damaged) and start again "
        f"(sessions shared with other devices can be imported again from their codes)"
    )
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return [finding("database", "ok", f"no {path} yet (the daemon makes it on its first start)")]
    except OSError as exc:
        return [finding("database", "problem", f"cannot read {path} ({exc.strerror or exc})", f"chmod 600 {path}")]
    if head != SQLITE_MAGIC:
        return [finding("database", "problem", f"{path} is damaged (not an SQLite database)", restore)]
    read_only = _read_only_fs(home)
    if read_only is not None:  # (mode=ro cannot open a WAL database there: SQLite must write its -shm)
        found = check_database_at(sqlite_ro_uri(path, immutable=True), path, restore)
        return [read_only, *found]
    return check_database_at(sqlite_ro_uri(path), path, restore)


def _read_only_fs(home: str) -> dict | None:
    """A finding for a home on a file system mounted read-only, where no daemon can start (it writes its lock,
    log and database); None otherwise."""
    try:
        if not os.statvfs(home).f_flag & os.ST_RDONLY:
            return None
    except OSError:
        return None
    return finding(
        "home",
        "problem",
        f"{home} is on a file system mounted read-only: no daemon can start there (it writes its lock, log and"
        " database); what follows was read without writing",
        "remount it read-write (mount -o remount,rw MOUNTPOINT), or copy the home to a writable disk and use"
        " --home there",
    )


def check_database_at(uri: str, path: str, restore: str) -> list[dict]:
    """The database's checks, opened read-only by `uri`."""
    from ..storage.schema import SCHEMA_VERSION

    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        return [finding("database", "problem", f"cannot open {path} ({exc})", f"chmod 600 {path}")]
    try:
        has_version = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'")
        version = conn.execute("SELECT version FROM schema_version").fetchone()[0] if has_version.fetchone() else 0
        if version > SCHEMA_VERSION:
            return [
                finding(
                    "database",
                    "problem",
                    f"{path} was written by a newer sessiond (schema version {version}; this one reads up to "
                    f"{SCHEMA_VERSION})",
                    "upgrade sessiond (pip install --upgrade sessiond), then start it again",
                )
            ]
        bad = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall() if r[0] != "ok"]
    except sqlite3.Error as exc:
        return [finding("database", "problem", f"{path} is damaged ({exc})", restore)]
    finally:
        conn.close()
    if bad:
        return [finding("database", "problem", f"{path} is damaged ({'; '.join(bad)[:300]})", restore)]
    return [finding("database", "ok", f"{path} is well formed (schema version {version})")]


def _check_dirs(home: str) -> list[dict]:
    out = []
    bad = 0
    for rel in PRIVATE_DIRS:
        path = os.path.join(home, rel) if rel else home
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        p = _mode_problem("home", path, st, 0o700, "folder")
        if p:
            out.append(p)
            bad += 1
    if not bad:
        out.append(finding("home", "ok", f"{home} and its folders are private (0700)"))
    return out


def _check_socket(home: str) -> list[dict]:
    path = socket_path(home)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return [finding("socket", "ok", f"no socket at {path} (no daemon is running)")]
    if not stat.S_ISSOCK(st.st_mode):
        return [finding("socket", "problem", f"{path} is not a socket", f"rm {path} && sessiond start --home {home}")]
    p = _mode_problem("socket", path, st, 0o600, "socket")
    out = [p] if p else [finding("socket", "ok", f"socket {path} is private (0600)")]
    folder = os.path.dirname(path)
    if folder != home and os.path.isdir(folder):  # a long home's socket, in a folder of its own
        q = _mode_problem("socket", folder, os.stat(folder), 0o700, "socket folder")
        if q:
            out.append(q)
    return out


def _key_problem(path: str, size: int, multiple: bool) -> str | None:
    if multiple:
        return None if size % KEY_SIZE == 0 else f"is damaged ({size} bytes, not a multiple of {KEY_SIZE})"
    return None if size == KEY_SIZE else f"is damaged ({size} bytes, expected {KEY_SIZE})"


def _check_keys(home: str) -> list[dict]:
    keys = os.path.join(home, "keys")
    device = os.path.join(keys, "device.key")
    out: list[dict] = []
    files = [device]
    sessions = os.path.join(keys, "sessions")
    try:
        files += sorted(os.path.join(sessions, n) for n in os.listdir(sessions))
    except FileNotFoundError:
        pass
    except PermissionError:
        return [finding("keys", "problem", f"cannot read the key folder {sessions}", f"chmod 700 {sessions}")]
    checked = 0
    for path in files:
        name = os.path.basename(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if path == device:
                out.append(
                    finding(
                        "keys",
                        "warn",
                        f"no device key at {device} yet (the daemon makes one on its first start; "
                        f"restore a backup with `sessiond key import` before that)",
                        f"sessiond key import --home {home}",
                    )
                )
            continue
        if not stat.S_ISREG(st.st_mode):
            aside = f"mv {path} {path}.aside"  # (not a key sessiond wrote: kept, out of the way)
            fix = (
                f"{aside} && sessiond key import --home {home}  # from your 24-word backup"
                if path == device
                else f"{aside}  # then, for the session, sessiond import --home {home} from a share code"
            )
            out.append(finding("keys", "problem", f"{path} is not a file (the daemon reads a key there)", fix))
            continue
        p = _mode_problem("keys", path, st, 0o600, "key file")
        if p:
            out.append(p)
        if name.endswith(".rekey"):  # a rekey under way; the daemon finishes it
            continue
        if not name.endswith((".key", ".write", ".old")):
            continue
        try:
            with open(path, "rb") as f:
                size = len(f.read())
        except PermissionError:
            out.append(finding("keys", "problem", f"cannot read the key file {path}", f"chmod 600 {path}"))
            continue
        why = _key_problem(path, size, name.endswith(".old"))
        if why:
            fix = (
                f"sessiond key import --home {home}  # from your 24-word backup"
                if path == device
                else f"sessiond import --home {home}  # the session again, from a share code"
            )
            out.append(finding("keys", "problem", f"key file {path} {why}", fix))
        checked += 1
    if not out:
        out.append(finding("keys", "ok", f"{checked} key file(s) in {keys}: private (0600) and well formed"))
    return out


def _check_secrets(home: str) -> list[dict]:
    out = []
    paths = [os.path.join(home, n) for n in SECRET_FILES]
    for name in SECRET_FOLDERS:
        folder = os.path.join(home, name)
        if os.path.isdir(folder):
            try:
                paths += sorted(os.path.join(folder, n) for n in os.listdir(folder))
            except PermissionError:
                pass
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        p = _mode_problem("home", path, st, 0o600, "secret file")
        if p:
            out.append(p)
    return out
