"""A fault hook for the tests (daemon/formats.py's import, complete.py, reimports.py hold requests at named
points with it; storage/groupcommit.py a delete's commit, `hold_commit`). daemon/testhooks.py passes it on to
the daemon's modules."""

from __future__ import annotations

import asyncio
import os
import time


def _arrived(point: str) -> list[str]:
    """The flag files of the hooks naming `point`, each told of this arrival (a line added)."""
    flags = []
    for hook in os.environ.get("SESSIOND_TEST_PAUSE", "").split(","):
        if hook and hook.partition(":")[0] == point:
            flag = hook.partition(":")[2]
            with open(flag, "a") as f:
                f.write(point + "\n")
            flags.append(flag)
    return flags


async def pause_for_tests(point: str) -> None:
    """A fault hook for the tests: with SESSIOND_TEST_PAUSE=POINT:FLAG_FILE in the environment (several such,
    comma-separated), the daemon reaching POINT adds a line to FLAG_FILE (made if need be: one line an
    arrival) and waits there until the test removes it (or kills it: kill -9)."""
    for flag in _arrived(point):
        while os.path.exists(flag):
            await asyncio.sleep(0.02)  # (a test hook: polls for the test's removal of the flag)


def pause_in_thread(point: str) -> None:
    """pause_for_tests for work done off the event loop (in a worker thread): it holds that thread only, so a
    test sees the loop answer meanwhile (and would see it stuck were the work moved back onto the loop)."""
    for flag in _arrived(point):
        while os.path.exists(flag):
            time.sleep(0.02)  # (a test hook: polls for the test's removal of the flag)


def pausing(point: str) -> bool:
    """Whether SESSIOND_TEST_PAUSE names `point` (pause_for_tests would hold there)."""
    return any(hook.partition(":")[0] == point for hook in os.environ.get("SESSIOND_TEST_PAUSE", "").split(",") if hook)
