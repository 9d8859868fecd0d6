"""`doctor`'s check of the folders on the daemon's own paths that another local user can write: the home's parents,
the folder store(s) it syncs through (their folders and parents), the socket's folder when it lives outside the
home, and the service unit's folder (the CLI passes it: it wrote the unit). sessiond makes none such (storage/
fsutil.py `ensure_durable_dir`, whatever the umask), but a folder an older sessiond made under `umask 000`, or one
widened by hand, keeps its mode: another user could then rename the home, the store's heads or the unit away and
put their own in its place. The home and its own folders (keys, logs) are doctor_files.py's, which wants them 0700
and which the daemon's start enforces (daemon/home.py `check_private_dir`).

A folder is flagged when a user other than you can write into it: group or others have its write bit, and it is
not sticky (/tmp's 1777: others cannot rename or remove what is yours there), and, for group only, the group
holds someone else (a user-private group, as `umask 002` systems give each user, holds only you)."""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import stat

from ..stores.config import folder_of
from ..sync.mirrorurls import mirror_urls
from .doctor_files import finding


def _group_only_you(gid: int) -> bool:
    """Whether no user but you is in group `gid` (as a member, or by it being their primary group)."""
    me = os.getuid()
    try:
        name = pwd.getpwuid(me).pw_name
        members = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return False
    if members - {name}:
        return False
    return not any(p.pw_gid == gid and p.pw_uid != me for p in pwd.getpwall())


def others_can_write(st: os.stat_result) -> bool:
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_ISVTX:
        return False
    return bool(mode & 0o002) or bool(mode & 0o020 and not _group_only_you(st.st_gid))


def _with_parents(path: str) -> list[str]:
    """`path` (absolute) and each folder above it, to /; the folders of its real path too, where a symbolic link
    leads elsewhere."""
    out: list[str] = []
    for start in dict.fromkeys((os.path.abspath(path), os.path.realpath(path))):
        p = start
        while True:
            out.append(p)
            up = os.path.dirname(p)
            if up == p:
                break
            p = up
    return list(dict.fromkeys(out))


def writable_folders(paths: list[tuple[str, str]], *, skip: frozenset[str] = frozenset()) -> list[dict]:
    """The problems of the folders in `paths` ((path, what it is to sessiond)) and above them that another user can
    write, each once, with its mode and its chmod; none of those in `skip` (checked otherwise)."""
    out = []
    seen: set[str] = set(skip)
    for top, what in paths:
        for path in _with_parents(top):
            if path in seen:
                continue
            seen.add(path)
            try:
                st = os.stat(path)
            except OSError:  # not made yet, or not ours to see
                continue
            if not stat.S_ISDIR(st.st_mode) or not others_can_write(st):
                continue
            mode = stat.S_IMODE(st.st_mode)
            where = what if path == top else f"above {what} {top}"
            out.append(
                finding(
                    "folders",
                    "problem",
                    f"folder {path} ({where}) is writable by another user (mode {mode:04o}): they could put"
                    " their own files, or their own folder, in place of sessiond's",
                    f"chmod go-w {shlex.quote(path)}",
                )
            )
    return out


def _store_folders(root: str) -> list[str]:
    """A folder store's own folders: objects/ and its (at most 256) objects/<2 hex>/, and heads/."""
    objects = os.path.join(root, "objects")
    try:
        shards = sorted(os.path.join(objects, n) for n in os.listdir(objects) if len(n) == 2)
    except OSError:
        shards = []
    return [objects, *shards, os.path.join(root, "heads")]


def daemon_folders(home: str, store_url: str | None, socket: str | None) -> list[tuple[str, str]]:
    """The daemon's own paths whose folders doctor checks: the home's parents, the folder stores of `store_url`
    (the daemon's store, a mirror's stores each) and the socket's folder when outside the home."""
    out = [(os.path.abspath(home), "the home")]  # (the home itself: doctor_files.py's, skipped by check_folders)
    for url in mirror_urls(store_url or ""):
        folder = folder_of(url)
        if folder:
            out.append((folder, "the folder store"))
            out += [(sub, "a folder of the folder store") for sub in _store_folders(folder)]
    if socket and os.path.dirname(socket) != home:
        out.append((os.path.dirname(socket), "the socket's folder"))
    return out


def check_folders(home: str, paths: list[tuple[str, str]]) -> list[dict]:
    """writable_folders' problems (but the home's own: doctor_files.py wants it 0700), or one ok finding."""
    found = writable_folders(paths, skip=frozenset({os.path.abspath(home)}))
    if found:
        return found
    return [finding("folders", "ok", "no folder above the home, of the store or of the socket is writable by others")]
