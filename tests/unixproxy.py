"""A Unix-socket proxy in front of a daemon, for what an app sees when its connection breaks: each
connection the app makes is accepted, a connection to the daemon made for it, and the two handed to the
subclass's `handle` (in the accepting thread: it starts threads of its own for the piping). Also a socket
that takes connections and never answers (`hung_listener`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable


class UnixProxy:
    def __init__(self, upstream: str):
        self.upstream = upstream
        self.path = os.path.join(tempfile.mkdtemp(prefix="sd-px-"), "px.sock")
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(self.path)
        self.srv.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                app, _ = self.srv.accept()
            except OSError:
                return
            self.before_connect()
            daemon = socket.socket(socket.AF_UNIX)
            daemon.connect(self.upstream)
            self.handle(app, daemon)

    def before_connect(self) -> None:
        """Called with each new connection of the app, before the daemon's is made (a proxy may hold it)."""

    def handle(self, app: socket.socket, daemon: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.srv.close()
        shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)


def pipe(src: socket.socket, dst: socket.socket, change: Callable[[bytes], bytes] | None = None) -> None:
    """What `src` sends passed on to `dst` (`change`d, if given) until it ends; then both are shut down."""
    try:
        while data := src.recv(65536):
            dst.sendall(change(data) if change else data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


@contextlib.contextmanager
def hung_listener(path: str):
    """A Unix socket at `path` that accepts every connection and never answers (reads nothing, sends nothing):
    a daemon stuck past its accept loop, or another program on the home's socket."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(16)
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:  # shut down: the test is over
                return
            held.append(conn)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield held
    finally:
        srv.shutdown(socket.SHUT_RDWR)
        srv.close()
        t.join(10)
        for conn in held:
            conn.close()
