"""What a push reads this device's log of a session with: a run of its operations, checked whole."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator

from ..storage.model import LogRun
from .errors import SyncError


def contiguous(sid: str, a: int, b: int, run: LogRun) -> LogRun:
    """`run`, if it holds exactly the operations a..b of this device's log of `sid`."""
    have = run.seqs
    if len(have) != max(0, b - a + 1) or (have and have[0] != a) or not run.consecutive():
        raise SyncError(
            f"this device's log of {sid} is not contiguous between {a} and {b} (have {len(have)} "
            f"operations, first {have[:3]}, last {have[-3:]}); not pushing a torn log"
        )
    return run


Loaders = tuple[Callable[[int, int], Awaitable[LogRun]], Callable[[], contextlib.AbstractContextManager]]


def log_loaders(db, sid: str, device: str) -> Loaders:
    """What LogWriter.write_run reads `device`'s log of `sid` with, seqs a..b, each run checked whole
    (contiguous): on the loop, and from a worker thread's own connection."""

    async def load(a: int, b: int) -> LogRun:
        return contiguous(sid, a, b, await db.log_run(sid, device, a - 1, b))

    @contextlib.contextmanager
    def open_loader() -> Iterator[Callable[[int, int], LogRun]]:
        with db.run_reader() as reader:  # a worker thread's own connection
            yield lambda a, b: contiguous(sid, a, b, reader.log_run(sid, device, a - 1, b))

    return load, open_loader
