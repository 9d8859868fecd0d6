"""The daemon's open-file limit, raised at start: every client connection, event subscriber, streamed answer
and file a push writes holds a descriptor, and a desktop session's soft limit (often 1024) is far below the
hard one its user may raise it to. Left low, the accepts past it fail (EMFILE) and clients that hold one
connection while they open a second (a client's kept connection and its append stream) wait on each other
until the idle timeout closes connections."""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import resource
import time

from ..stores.errors import out_of_descriptors

log = logging.getLogger("sessiond")

# The most the soft limit is raised to when the hard one is unlimited (the kernel's nr_open is 1,048,576 by
# default: a soft limit above it is refused).
UNLIMITED_TO = 1 << 20


def raise_fd_limit() -> tuple[int, int]:
    """Sets RLIMIT_NOFILE's soft limit to the hard one (a process may, unprivileged). Returns (before, after);
    the same twice if it could not be raised (no such limit here, or refused)."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ValueError, OSError):
        return (0, 0)
    want = UNLIMITED_TO if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):  # above the kernel's nr_open: left as it is
            return (soft, soft)
        return (soft, want)
    return (soft, soft)


class OutOfDescriptors:
    """The event loop's exception handler: an accept that failed for want of descriptors (EMFILE: this
    process's limit; ENFILE: the system's) is said in the daemon's log, once a minute at most while it lasts,
    naming the limit and what to do; asyncio's own report, a traceback on standard error at every retry of the
    accept (a second apart), is not made, nor that of the retry left when the daemon's stop closed the socket
    meanwhile (asyncio's own slip: it then finds no socket, a ValueError; `stopping` is set by the daemon's
    stop). Anything else goes to asyncio's default handler."""

    EVERY = 60.0  # seconds between two warnings while it lasts

    def __init__(self) -> None:
        self._said = -math.inf
        self.stopping = False  # the daemon's stop has begun: its socket closed or closing

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        if isinstance(exc, ValueError) and self.stopping:
            # asyncio's retry of that accept, a second later, after the daemon closed its socket (its stop):
            # nothing is left to serve
            return
        if not (isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE)):
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self._said < self.EVERY:
            return
        self._said = now
        log.warning(
            f"{out_of_descriptors(exc.errno)}: new connections wait until some close; said once a minute while it"
            " lasts",
            extra={"event": "out_of_descriptors"},
        )
