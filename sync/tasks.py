"""Stopping the sync worker's own tasks so that a stop always ends.

Cancelling a task once is not always enough on Python 3.11: `asyncio.wait_for` can lose a cancellation
that arrives as the operation it waits for completes (fixed in 3.12), and a push made of many such
waits then carries on as if nothing happened, to its loop's next `await`, where nothing would ever cancel
it again -- a daemon told to stop hung there for good (found under bench/append.py). So each task is
cancelled again until it is done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable, Mapping

log = logging.getLogger("sessiond.sync")

RECANCEL_EVERY = 0.5  # seconds between two cancellations of a task that is still running
AT_ONCE = 8  # sessions a sync checks or pulls at once (as the follower pulls them)


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


async def until_deadline(
    work: Mapping[str, Awaitable[object]],
    deadline: float,
    behind: set[asyncio.Task],
    *,
    at_once: int = AT_ONCE,
    until: asyncio.Event | None = None,
) -> set[str]:
    """Run each session's `work`, `at_once` at a time, until all of it ended or time.monotonic() reaches
    `deadline`, or `until` is set (the daemon stopping); returns the sessions whose work had not ended. That
    work goes on in the background: its tasks are held in `behind` until they end (whoever owns `behind`
    stops what is left with stop_tasks), and what one raises there is logged. What the work that ended
    raised is raised here."""
    if not work:
        return set()
    gate = asyncio.Semaphore(at_once)

    async def gated(job: Awaitable[object]) -> object:
        async with gate:
            return await job

    tasks = {asyncio.ensure_future(gated(job)): sid for sid, job in work.items()}
    stopped = asyncio.ensure_future(until.wait()) if until is not None else None
    waits = set(tasks)
    try:
        while waits and (stopped is None or not stopped.done()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            more = [stopped] if stopped is not None else []
            _, waits = await asyncio.wait([*waits, *more], timeout=left, return_when=asyncio.FIRST_COMPLETED)
            waits.discard(stopped)
    finally:
        if stopped is not None:
            stopped.cancel()
    done = {t for t in tasks if t.done()}
    pending = set(tasks) - done
    for t in pending:
        behind.add(t)
        t.add_done_callback(_ended_behind(behind, tasks[t]))
    for t in done:
        t.result()
    return {tasks[t] for t in pending}


def _ended_behind(behind: set[asyncio.Task], sid: str):
    def ended(t: asyncio.Task) -> None:
        behind.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.warning("a sync's work left to end in the background failed: %s", t.exception(), extra={"session": sid})

    return ended
