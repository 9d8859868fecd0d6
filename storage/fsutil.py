"""Atomic, durable file writes: temp file in the same folder, fsync, rename, fsync the folder."""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from urllib.parse import quote

from .errors import crash_at
from .testhooks import pause_in_thread

_FADVISE = hasattr(os, "posix_fadvise")  # Linux and most Unixes; not macOS
TEMP_PREFIX = ".tmp-"  # atomic_write's temporary files: .tmp-NAME-RANDOM, beside NAME


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: str,
    data: bytes | list[bytes],
    mode: int = 0o600,
    *,
    sync: bool = True,
    uncached: bool = False,
    sync_dir: bool = True,
) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one, never a mix.
    `data` may be a list of pieces, written in order as one file by os.writev, without joining them.

    The file is created with `mode` from the start (never readable by others, even for an instant).
    `uncached`: once the file is on disk, drop it from the OS page cache (where the OS can), for
    files that this process will not read again soon. See FileStore.
    `sync_dir=False` (with `sync`): the file is on disk but its new name is not yet durable, until the
    caller fsyncs the folder, which makes every name written there so far durable at once (the last
    of several writes into one folder does it).
    """
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f"{TEMP_PREFIX}{os.path.basename(path)}-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        write_all(fd, data)
        if sync:
            os.fsync(fd)
            if uncached and _FADVISE:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages only: they are on disk
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    crash_at("write:" + os.path.basename(path))  # (tests: killed with the new file written, not renamed)
    try:
        os.replace(tmp, path)
    except BaseException:  # e.g. `path` is a folder: no copy of the data is left under another name
        _unlink_quietly(tmp)
        raise
    if sync and sync_dir:
        fsync_dir(folder)


# link(2)'s refusals by a file system that has no hard links (FAT, exFAT, some network and FUSE file systems)
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}


def create_new(path: str, data: bytes | list[bytes], mode: int = 0o600) -> None:
    """Write `data` to `path` as a new file, durably and whole, refusing (FileExistsError, nothing left) if a file
    is at `path` when it is put in place, however late that file was made: the data written and fsynced under a
    temporary name beside it, then hard-linked to `path` (link(2) never replaces a file), the temporary name
    removed and the folder fsynced. On a file system without hard links, `path` is made with O_EXCL and written
    there (still never replacing; a failed write removes it, but a crash mid-write leaves it partial)."""
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f"{TEMP_PREFIX}{os.path.basename(path)}-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        pause_in_thread("create." + os.path.basename(path))  # (tests: a file made at the last moment)
        try:
            os.link(tmp, path)
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise
            _create_excl(path, data, mode)
    finally:
        _unlink_quietly(tmp)
    fsync_dir(folder)


def _create_excl(path: str, data: bytes | list[bytes], mode: int) -> None:
    """create_new's way on a file system without hard links: `path` made with O_EXCL, written and fsynced there
    (removed if that fails)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)
        raise
    os.close(fd)


def remove_leftover_temp_files(folder: str, before: float, *, also: re.Pattern[str] | None = None) -> list[str]:
    """Removes from `folder` the temporary files of atomic_write (and names `also` matches) that a process
    killed between the write and the rename left, last changed before `before` (wall-clock seconds: the
    daemon's start, or long enough ago, so that none is a write under way); returns their names. A missing
    folder has none."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    gone = []
    for name in names:
        if not (name.startswith(TEMP_PREFIX) or (also is not None and also.fullmatch(name))):
            continue
        path = os.path.join(folder, name)
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) and st.st_mtime < before:
                os.unlink(path)
                gone.append(name)
        except FileNotFoundError:
            pass
    return gone


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def write_all(fd: int, data: bytes | list[bytes]) -> None:
    """Write all of `data` (bytes, or pieces in order) to `fd`, whatever each call writes of it."""
    if isinstance(data, bytes):
        data = [data]
    views = [memoryview(d) for d in data if d]
    while views:
        n = os.writev(fd, views) if len(views) > 1 else os.write(fd, views[0])
        while views and n >= len(views[0]):  # the pieces written whole
            n -= len(views[0])
            views.pop(0)
        if n:  # the rest of a piece written in part
            views[0] = views[0][n:]


# The first read of read_small: Python's os.read(fd, n) makes an n-byte buffer and shrinks it to what was
# read. Past 512 bytes the buffer comes from glibc's heap, and shrinking it in place leaves the rest of it
# free just after the small piece kept: a 64 KiB read of a 32-byte key file left a 64 KiB hole that the next
# such read (64 KiB and the header) no longer fits, for as long as the key stays cached. Under
# bench/memory.py the daemon's heap kept ~150 such holes, its free heap growing ~50 MB an hour
# (bench/results/profile-memory.md, the twenty-first pass). 256 bytes come from Python's own allocator.
SMALL_READ = 256


def read_small(path: str) -> bytes:
    """A small file's bytes (a key, a head) read to its end in buffers no larger than it: SMALL_READ bytes
    first, and past that the rest in one read of its own size. Raises FileNotFoundError and OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        first = os.read(fd, SMALL_READ)
        if not first:
            return first
        parts = [first]
        want = max(SMALL_READ, os.fstat(fd).st_size - len(first)) if len(first) == SMALL_READ else SMALL_READ
        while chunk := os.read(fd, want):  # to the end: a read may come back short before it (a signal)
            parts.append(chunk)
            want = SMALL_READ
        return first if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)


def ensure_durable_dir(path: str) -> None:
    """Create `path` as 0700 if missing (an existing folder keeps its mode), for a folder whose files are
    acknowledged once written: when this makes it, its entry in its parent is made durable too (an fsync of the
    parent), or a power loss could take the new folder, and the fsynced files in it, away. Missing parents are
    made so too, as `mkdir -p` makes them but never writable by group or others whatever the umask: under
    `umask 000` another local user could otherwise swap the home, the folder store or the relay's data folder
    in them for one of their own."""
    if os.path.isdir(path):
        return
    _durable_mkdir(path, 0o700)


def _durable_mkdir(path: str, mode: int) -> None:
    parent = os.path.dirname(os.path.abspath(path))  # abspath: a relative `--data relay` has a parent too
    if parent != path and not os.path.isdir(parent):
        _durable_mkdir(parent, 0o755)  # masked by the umask as mkdir -p's is, and never more than 0755
    try:
        os.mkdir(path, mode)
    except FileExistsError:  # made meanwhile
        if not os.path.isdir(path):
            raise
    fsync_dir(parent)


def sqlite_ro_uri(path: str, *, immutable: bool = False) -> str:
    """The SQLite URI that opens the database file at `path` read-only (`immutable`: without the -shm, on a
    read-only file system or a copy no one writes). The path quoted: a URI reads a '?' as its query, a '#' as
    its fragment and a '%' as an escape, and a home named with one opened another file (and made it)."""
    return f"file:{quote(path)}?{'immutable=1' if immutable else 'mode=ro'}"
