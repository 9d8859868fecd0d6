"""Where a client finds a daemon: a home's folder and the socket in it (or the one its daemon recorded in
the home's lock file). Part of the contract between the daemon and its clients; standard library and
platformdirs only, so that the client and the CLI start fast."""

import hashlib
import os
import stat

import platformdirs

SOCKET_NAME = "sessiond.sock"
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux; keep a margin


class HomeError(Exception):
    pass


def default_home() -> str:
    env = os.environ.get("SESSIOND_HOME")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    return platformdirs.user_data_dir("sessiond", appauthor=False)


def resolve_home(home: str | None) -> str:
    return os.path.abspath(os.path.expanduser(home)) if home else default_home()


def socket_path(home: str) -> str:
    """Where clients find a home's socket: in the home (0700), or, if that path is too long for a Unix
    socket, where the home's daemon recorded it (its lock file), so that it does not depend on the
    client's environment."""
    path = os.path.join(home, SOCKET_NAME)
    if len(path.encode()) <= MAX_SOCKET_PATH:
        return path
    return read_lock(home)[1] or runtime_socket_path(home)


def runtime_socket_path(home: str) -> str:
    """Where a daemon puts its socket: in the home if the path fits, else in a 0700 folder of its own,
    named after the home, under the runtime directory (or /tmp/sessiond-UID if that is too long too)."""
    path = os.path.join(home, SOCKET_NAME)
    if len(path.encode()) <= MAX_SOCKET_PATH:
        return path
    tag = hashlib.blake2s(home.encode(errors="surrogateescape"), digest_size=8).hexdigest()
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    for base in (runtime if os.path.isabs(runtime) else "", f"/tmp/sessiond-{os.getuid()}"):
        path = os.path.join(base, tag, SOCKET_NAME)
        if base and len(path.encode(errors="surrogateescape")) <= MAX_SOCKET_PATH:
            return path
    raise HomeError(f"no folder for the socket of {home}: the runtime directory path is too long")


def check_socket_folder(path: str) -> None:
    """A socket outside its home (a long home's, under the runtime directory or /tmp/sessiond-UID):
    its folder and that folder's parent must be real folders (not symbolic links) of this user that
    no other user can write to. Otherwise another local user could have made them first, and then
    replace the socket with their own: a daemon would serve where they can swap it, a client would
    send its sessions to them. Raises HomeError saying what to fix; a folder not made yet passes
    (the daemon makes it, 0700)."""
    folder = os.path.dirname(path)
    for where, what, others in (
        (os.path.dirname(folder), "the folder holding the socket's folder", 0o022),
        (folder, "the socket folder", 0o077),
    ):
        try:
            st = os.lstat(where)
        except FileNotFoundError:
            continue
        fix = (
            f"another local user may have made it to take over sessiond's socket: remove it (rm -r {where}), "
            f"or set XDG_RUNTIME_DIR to a private folder of yours"
        )
        if stat.S_ISLNK(st.st_mode):
            raise HomeError(f"{what} {where} is a symbolic link; refusing to use it for the socket: {fix}")
        if not stat.S_ISDIR(st.st_mode):
            raise HomeError(f"{what} {where} is not a folder; refusing to use it for the socket: {fix}")
        if st.st_uid != os.getuid():
            raise HomeError(
                f"{what} {where} is owned by uid {st.st_uid}, not you (uid {os.getuid()}); refusing to use it "
                f"for the socket: {fix}"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & others:
            raise HomeError(
                f"{what} {where} is open to {'writes by ' if others == 0o022 else ''}group or others "
                f"(mode {mode:04o}); refusing to use it for the socket. Fix it with: chmod 700 {where}"
            )


def lock_path(home: str) -> str:
    return os.path.join(home, "daemon.lock")


def read_lock(home: str) -> tuple[int | None, str | None]:
    """The pid and socket path a daemon wrote in the home's lock file (None where unknown). Whether a
    daemon still holds the lock is another question (`lock_held`)."""
    try:
        with open(lock_path(home), "rb") as f:
            lines = os.fsdecode(f.read(4096)).splitlines()
    except OSError:
        return None, None
    pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
    sock = lines[1].strip() if len(lines) > 1 and os.path.isabs(lines[1].strip()) else None
    return pid, sock
