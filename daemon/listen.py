"""The daemon's claim on its home: the lock file (one daemon per home; it names the holder's pid and
socket) and the Unix socket the API is served on (0600 from the moment it exists, or the one a
service manager handed over)."""

from __future__ import annotations

import fcntl
import os
import shlex
import socket
import time

from .activation import handed_socket
from .home import Home, HomeError, read_lock


class AlreadyRunning(HomeError):
    pass


def lock_holder(home: str, wait: float = 2.0) -> int | None:
    """The pid in the home's lock file, waited for a moment: a daemon that has just taken the lock writes
    its pid right after (a start racing another sees the lock taken, the file not yet written)."""
    deadline = time.monotonic() + wait
    while True:
        pid = read_lock(home)[0]
        if pid is not None or time.monotonic() >= deadline:
            return pid
        time.sleep(0.02)


def running_message(home: str) -> str:
    """What a start says when another daemon holds the home's lock (running, or still starting)."""
    pid = lock_holder(home)
    where = shlex.quote(home)
    return (
        f"a sessiond daemon is already running (or starting) for {home}"
        + (f" (pid {pid})" if pid else "")
        + f"; `sessiond status --home {where}` shows it, `sessiond stop --home {where}` stops it"
    )


def take_lock(home: Home) -> int:
    """The home's lock, held for the process's life: its open file descriptor."""
    fd = os.open(home.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(running_message(home.path)) from None
    # The lock file says who holds it and where its socket is: clients find the socket from the
    # home, whatever their own environment (a long home's socket is under this process's runtime dir).
    os.ftruncate(fd, 0)
    os.write(fd, os.fsencode(f"{os.getpid()}\n{home.socket}\n"))
    return fd


def listening_socket(path: str) -> tuple[socket.socket, bool]:
    """The socket to serve on, and whether a service manager handed it over (then its file is the
    manager's, which keeps listening after this process ends); else a new one bound at `path`."""
    sock = handed_socket(path)  # socket-activated: the service manager bound it
    if sock is not None:
        return sock, True
    if os.path.exists(path):
        if _socket_answers(path):
            raise AlreadyRunning(f"another process answers on {path}; stop it first")
        os.unlink(path)  # left behind by a daemon that was killed
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is 0600 from the moment it exists
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(256)
    return sock, False


def _socket_answers(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()
