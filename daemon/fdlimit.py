"""The daemon's open-file limit, raised at start: every client connection, event subscriber, streamed answer
and file a push writes holds a descriptor, and a desktop session's soft limit (often 1024) is far below the
hard one its user may raise it to. Left low, the accepts past it fail (EMFILE) and clients that hold one
connection while they open a second (a client's kept connection and its append stream) wait on each other
until the idle timeout closes connections."""

from __future__ import annotations

import resource

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
