"""Socket activation: the daemon takes the listening socket its service manager hands it.

systemd's protocol (sd_listen_fds(3)), done here without a dependency: the manager sets LISTEN_PID to
the pid of the process the sockets are for, LISTEN_FDS to how many it passed (as fds 3, 4, ...), and
optionally LISTEN_FDNAMES (their names, colon-separated). A process whose pid is not LISTEN_PID was
not meant to have them (it inherited the variables) and ignores them. The variables are unset after
reading either way, so that processes this one starts never take them for theirs.

The socket handed over must be what clients expect: a listening AF_UNIX stream socket bound to the
home's socket path, owned by this user and 0600. Anything else is refused with an error saying what
is wrong, rather than served on (an app would not find it, or another user could reach it).
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat

from .home import HomeError

SD_LISTEN_FDS_START = 3
FD_NAME = "sessiond"  # FileDescriptorName= in the socket unit service.py writes


class ActivationError(HomeError):
    pass


def listen_fds(environ: dict | None = None) -> list[tuple[int, str]]:
    """The fds passed to this process by its service manager, with their names ("unknown" where the
    manager named none), as sd_listen_fds() with unset_environment=1. Each gets FD_CLOEXEC."""
    env = os.environ if environ is None else environ
    pid, count, names = env.get("LISTEN_PID"), env.get("LISTEN_FDS"), env.get("LISTEN_FDNAMES")
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(key, None)
    if pid is None or count is None:
        return []
    try:
        if int(pid) != os.getpid():
            return []  # meant for another process (inherited from a parent): not ours to touch
        n = int(count)
    except ValueError:
        raise ActivationError(f"socket activation: LISTEN_PID={pid!r} / LISTEN_FDS={count!r} are not numbers") from None
    if n <= 0:
        return []
    labels = names.split(":") if names else []
    if len(labels) != n:
        labels = ["unknown"] * n
    out = []
    for i in range(n):
        fd = SD_LISTEN_FDS_START + i
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError:
            raise ActivationError(f"socket activation: LISTEN_FDS={n} but fd {fd} is not open") from None
        fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
        out.append((fd, labels[i]))
    return out


def handed_socket(expected_path: str, environ: dict | None = None) -> socket.socket | None:
    """The listening socket the service manager handed this process for `expected_path`, checked; None
    when the daemon was not socket-activated (it then binds its own)."""
    fds = listen_fds(environ)
    if not fds:
        return None
    if len(fds) > 1:
        named = [fd for fd, name in fds if name == FD_NAME]
        if len(named) != 1:
            raise ActivationError(
                f"socket activation: {len(fds)} sockets were passed and not exactly one is named "
                f"{FD_NAME!r} (FileDescriptorName=); give the service one socket"
            )
        fds = [(named[0], FD_NAME)]
    fd = fds[0][0]
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ActivationError(f"socket activation: fd {fd} is not a socket ({exc.strerror or exc})") from None
    try:
        check(sock, expected_path)
    except BaseException:
        sock.detach()  # leave the fd as it was handed (the manager keeps its own copy anyway)
        raise
    sock.setblocking(False)
    return sock


def check(sock: socket.socket, expected_path: str) -> None:
    if sock.family != socket.AF_UNIX:
        raise ActivationError(
            f"socket activation: the socket passed is not a Unix socket (family {sock.family!r}); "
            f"sessiond listens on a Unix socket only: use ListenStream={expected_path}"
        )
    if sock.type != socket.SOCK_STREAM:
        raise ActivationError(
            f"socket activation: the socket passed is not a stream socket ({sock.type!r}); "
            f"use ListenStream= in the socket unit"
        )
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise ActivationError(
            "socket activation: the socket passed is not listening; use ListenStream= and Accept=no in the socket unit"
        )
    name = sock.getsockname()
    path = os.fsdecode(name) if isinstance(name, (bytes, str)) else ""
    if path != expected_path:
        shown = "an unnamed or abstract socket" if not path or path.startswith("\0") else path
        raise ActivationError(
            f"socket activation: the socket passed is bound to {shown}, not to {expected_path} "
            f"where clients look for this home's daemon; reinstall the service "
            f"(`sessiond service install`) so that its ListenStream= is that path"
        )
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ActivationError(f"socket activation: the socket file {path} is gone ({exc.strerror})") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise ActivationError(f"socket activation: {path} is not a socket file")
    if st.st_uid != os.getuid():
        raise ActivationError(
            f"socket activation: the socket {path} is owned by uid {st.st_uid}, not you "
            f"(uid {os.getuid()}); refusing to serve on it"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ActivationError(
            f"socket activation: the socket {path} is open to group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); set SocketMode=0600 in the socket unit"
        )
