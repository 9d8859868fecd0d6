"""Whether a daemon holds a home's lock (daemon/listen.py takes it), and whether a process is that daemon:
what the CLI asks before it starts, stops or replaces one."""

from __future__ import annotations

import fcntl
import os

from ..api.locate import lock_path


def lock_held(home: str) -> bool:
    """True while a daemon holds the home's lock."""
    try:
        fd = os.open(lock_path(home), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock this took
    return False


def holds_lock(pid: int, home: str) -> bool:
    """Whether process `pid` has the home's lock file open: that it is really this home's daemon, not
    another process that got its pid later. Without /proc, trust a held lock."""
    try:
        want = os.stat(lock_path(home))
    except OSError:
        return False
    fd_dir = f"/proc/{pid}/fd"
    if not os.path.isdir("/proc/self/fd"):
        return lock_held(home)
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return False
    for name in names:
        try:
            st = os.stat(os.path.join(fd_dir, name))
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
            return True
    return False
