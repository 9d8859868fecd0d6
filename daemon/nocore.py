"""No core dumps: a process holding keys (the daemon: the device key, session keys and write secrets, a
provider's API key while a request needs it; the relay: login tokens as it checks them) turns them off at
start, so that a crash writes no copy of its memory into the folder it was started from (a project, a
synced folder) or a crash collector's store, whatever limit the shell that started it allowed."""

from __future__ import annotations

import resource


def no_core_dumps() -> None:
    """Sets this process's core file size limit, soft and hard, to 0 (a hard limit lowered cannot be raised
    again by the process or what it starts). A platform without the limit is left as it is."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):  # no such limit here, or refused: nothing more this process can do
        pass
