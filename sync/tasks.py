"""Stopping the sync worker's own tasks so that a stop always ends.

Cancelling a task once is not always enough on Python 3.11: `asyncio.wait_for` can lose a cancellation
that arrives as the operation it waits for completes (fixed in 3.12), and a push made of many such
waits then carries on as if nothing happened, to its loop's next `await`, where nothing would ever cancel
it again -- a daemon told to stop hung there for good (found under bench/append.py). So each task is
cancelled again until it is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

RECANCEL_EVERY = 0.5  # seconds between two cancellations of a task that is still running


async def stop_tasks(tasks: Iterable[asyncio.Task]) -> None:
    """Cancel the tasks and wait until every one is done, cancelling again those that go on; what they
    raised is dropped (they are being stopped)."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        done, pending = await asyncio.wait(pending, timeout=RECANCEL_EVERY)
        for t in done:
            if not t.cancelled():
                t.exception()  # retrieved: nothing is logged as never retrieved
