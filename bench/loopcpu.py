"""The daemon's event-loop CPU per append, and appends per COMMIT, with the clients in another process.
Prints JSON.

The daemon (`daemon.server.serve`: real SQLite, real socket, sync idle) runs on the main thread of this
process, so the loop thread's own CPU clock (`time.pthread_getcpuclockid`) and the database's commit count
(`Connections.commits`) can be read around each round; the clients are threads of the blocking `Client` in
a child process, each appending single messages to a session of its own, so that their GIL is not the
daemon's. `BENCH_CLIENTS` (16), `BENCH_APPENDS` per round (8,000), `BENCH_ROUNDS` (3). Group commit shows
as `appends_per_commit`: about 1 with one client; with many, as many as arrive while one COMMIT waits.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from _util import remove

from sessiond.daemon import server

CLIENTS = int(os.environ.get("BENCH_CLIENTS", 16))
APPENDS = int(os.environ.get("BENCH_APPENDS", 8000)) // CLIENTS * CLIENTS
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))

# The child: its sessions, a warm-up, then one round of appends each time it reads a line.
CLIENT = r"""
import sys, threading, time
from sessiond.client import Client
home, k, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
c = Client(home)
sids = [c.create_session(name="loopcpu")["id"] for _ in range(k)]
for s in sids:
    for _ in range(20):
        c.append(s, "user", "warm")
print("ready", flush=True)
def write(j):
    cl = Client(home)
    for i in range(n // k):
        cl.append(sids[j], "user", f"single message {i} with a little text in it")
for _ in range(rounds):
    sys.stdin.readline()
    threads = [threading.Thread(target=write, args=(j,)) for j in range(k)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(time.perf_counter() - t0, flush=True)
"""


def new_home(prefix: str = "sd-loopcpu-") -> str:
    """A home in a new temporary folder, sync idle (no push nor pull during the rounds)."""
    home = os.path.join(tempfile.mkdtemp(prefix=prefix), "home")
    os.makedirs(home, mode=0o700)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write("push_delay = 3600\nsync_interval = 3600\n")
    return home


def start_clients(home: str, rounds: int) -> tuple[subprocess.Popen, Any]:
    """(From a thread of the daemon's process.) Once the daemon serves `home`: the child of clients started and
    warmed up, waiting for a line per round, and the daemon's `Connections` (its commit count)."""
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(home, "sessiond.sock")):
        if time.monotonic() > deadline:
            raise RuntimeError("the daemon did not start")
        time.sleep(0.05)
    child = subprocess.Popen(
        [sys.executable, "-c", CLIENT, home, str(CLIENTS), str(APPENDS), str(rounds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        raise RuntimeError("the clients did not start")
    return child, next(o for o in gc.get_objects() if type(o).__name__ == "Connections")


def main() -> None:
    home = new_home()
    loop_clock = time.pthread_getcpuclockid(threading.get_ident())
    rounds: list[dict] = []

    def drive() -> None:
        try:
            child, db = start_clients(home, ROUNDS)
            assert child.stdin is not None and child.stdout is not None
            for _ in range(ROUNDS):
                commits, cpu, proc = db.commits, time.clock_gettime(loop_clock), time.process_time()
                child.stdin.write("\n")
                child.stdin.flush()
                wall = float(child.stdout.readline())
                cpu = time.clock_gettime(loop_clock) - cpu
                proc = time.process_time() - proc
                rounds.append(
                    {
                        "loop_cpu_us_per_append": round(cpu / APPENDS * 1e6, 1),
                        # every thread of the daemon's process (the writer's, the checkpointer's...)
                        "process_cpu_us_per_append": round(proc / APPENDS * 1e6, 1),
                        "appends_per_commit": round(APPENDS / max(1, db.commits - commits), 2),
                        "appends_per_second": round(APPENDS / wall),
                    }
                )
            child.wait(timeout=60)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # the daemon's own clean stop

    threading.Thread(target=drive, daemon=True).start()
    try:
        asyncio.run(server.serve(home, announce=False))
    finally:
        remove(os.path.dirname(home))
    out: dict = {"clients": CLIENTS, "appends_per_round": APPENDS, "rounds": rounds}
    for k in ("loop_cpu_us_per_append", "process_cpu_us_per_append", "appends_per_commit", "appends_per_second"):
        out[k] = statistics.median(r[k] for r in rounds) if rounds else None
    print(json.dumps(out))


if __name__ == "__main__":
    main()
