"""A database open refused part-way (storage/connections.py `_open`) closed the writer and the reader it had made,
but not the bulk reader's connection, nor anything `Connections` had made when its own set-up failed (the
checkpointer's connection and thread, the bulk thread): a daemon's start refused, or a tool retrying an open,
kept a descriptor of the database file (and of its WAL) for good. Shown with a real refusal: the process's open
files limited to a few more than it holds, so that the open runs out of descriptors at each of its steps in
turn; after each refused open the process holds the descriptors and threads it held before."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, resource, sys, threading, time
    from sessiond.storage.database import Database
    from sessiond.storage.errors import UnusableDatabase

    def held():
        # a thread joined may still be listed a moment (its OS thread ends after join() returns: 1 close in 10
        # right after it): counted once the OS lists no more threads than Python runs, so that the count taken
        # before the opens (right after a close) is not one too many, which a later count matched only by a
        # thread of its own step still ending (else a "leak" of -1 thread)
        deadline = time.monotonic() + 10
        while len(os.listdir("/proc/self/task")) > threading.active_count() and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(os.listdir("/proc/self/fd")), len(os.listdir("/proc/self/task"))

    def settled(before):
        deadline = time.monotonic() + 10
        while held() != before and time.monotonic() < deadline:
            time.sleep(0.01)
        return held()

    async def main(path):
        db = await Database.open(path)  # made and migrated: the opens below only open it
        await db.close()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        before = held()
        out = {"refused": [], "opened": [], "leaks": []}
        for extra in range(0, 24):
            resource.setrlimit(resource.RLIMIT_NOFILE, (before[0] + extra, hard))
            try:
                db = await Database.open(path)
            except UnusableDatabase:
                out["refused"].append(extra)
            else:
                out["opened"].append(extra)
                await db.close()
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            now = settled(before)
            if now != before:
                out["leaks"].append([extra, now[0] - before[0], now[1] - before[1]])
                before = now
        print(json.dumps(out))

    asyncio.run(main(sys.argv[1]))
    """
)


def test_an_open_refused_part_way_leaves_no_descriptor_nor_thread(tmp_path):
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "sessions.db")], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert len(got["refused"]) >= 3 and got["opened"], got  # refused at several steps, then opened whole
    assert got["leaks"] == [], got  # main: each refusal after the bulk reader's opening kept its descriptors
