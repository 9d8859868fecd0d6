"""The event loop's CPU per push of a short run, the steady push of a session being written (issue 17, row 2).

In one process: a database and a `Syncer` over a folder store, as the daemon has them. Each round appends
`PUSHLOOP_MESSAGES` (40, about what a push carries under bench/load.py) short messages to each of
`PUSHLOOP_SESSIONS` (200) sessions, not measured, then pushes them all, four at a time (the push queue's
workers), measuring the main thread's CPU clock (the event loop's: `time.thread_time`) and the process's
(all threads) across the pushes. `PUSHLOOP_ROUNDS` rounds (5); each session's first push (its key made,
its head read) is a round of its own, not counted. Prints JSON: per push, the loop's and the process's
CPU in microseconds, the median round and every round.

The loop's CPU is what a push takes from the appends on a loaded daemon; the process's tells whether work
moved off the loop cost more in all. Both are CPU clocks, so steadier than rates on a shared machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from _util import remove

from sessiond.storage.database import Database
from sessiond.stores import FileStore
from sessiond.sync.engine import Syncer


def process_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run(sessions: int, messages: int, rounds: int) -> dict:
    folder = tempfile.mkdtemp(prefix="sd-pushloop-")
    db = await Database.open(os.path.join(folder, "db.sqlite"))
    syncer = Syncer(db, FileStore(os.path.join(folder, "store")), os.path.join(folder, "keys"), timeout=30)
    try:
        sids = [(await db.create_session({"name": f"s{i}"}))["id"] for i in range(sessions)]
        gate = asyncio.Semaphore(4)

        async def push(sid: str) -> None:
            async with gate:
                await syncer.push(sid, compact=True)

        out = []
        for r in range(rounds + 1):
            for k, sid in enumerate(sids):
                await db.append_messages(
                    sid, [{"role": "user", "content": f"message {r}.{k}.{i} " + "x" * 200} for i in range(messages)]
                )
            loop0, cpu0, t0 = time.thread_time(), process_cpu(), time.perf_counter()
            await asyncio.gather(*(push(sid) for sid in sids))
            loop1, cpu1, t1 = time.thread_time(), process_cpu(), time.perf_counter()
            if r:  # the first round makes the keys and reads the heads
                out.append(
                    {
                        "loop_us_per_push": round(1e6 * (loop1 - loop0) / sessions, 1),
                        "process_us_per_push": round(1e6 * (cpu1 - cpu0) / sessions, 1),
                        "wall_ms": round(1e3 * (t1 - t0), 1),
                    }
                )
        return {
            "sessions": sessions,
            "messages_per_push": messages,
            "loop_us_per_push": statistics.median(x["loop_us_per_push"] for x in out),
            "process_us_per_push": statistics.median(x["process_us_per_push"] for x in out),
            "rounds": out,
        }
    finally:
        await syncer.stop()
        await db.close()
        remove(folder)


if __name__ == "__main__":
    print(
        json.dumps(
            asyncio.run(
                run(
                    int(os.environ.get("PUSHLOOP_SESSIONS", 200)),
                    int(os.environ.get("PUSHLOOP_MESSAGES", 40)),
                    int(os.environ.get("PUSHLOOP_ROUNDS", 5)),
                )
            ),
            indent=2,
        )
    )
