"""Work per append, counted, not timed: what the daemon's process does for each append, by function and by
statement, for comparing two trees on a shared machine where CPU seconds are noise. Prints JSON.

The daemon (`daemon.server.serve`: real SQLite, real socket, sync idle) runs on this process's main thread, as in
bench/loopcpu.py; a child process of BENCH_CLIENTS (1) blocking clients makes BENCH_SESSIONS (1) sessions each,
warms each up with BENCH_WARM (40) appends, then appends BENCH_APPENDS (400) in all, round robin over its
sessions, while the counts run:

* `py_calls`: Python function calls per append, every thread of the daemon (`sys.setprofile`,
  `threading.setprofile`); `loop_calls` those of the event loop's thread; `by_function` and `by_loop` per function;
* `sql`: statements per append as SQLite's trace reports them (a trigger's steps count as statements there);
  `by_sql` per statement, its literals replaced by ? and N;
* `vm_steps`: SQLite virtual machine steps per append (a progress handler every 10 steps on every connection,
  each count given to the statement traced last on its connection); `by_vm` per statement.

With one client each append is its own commit and the counts repeat within ~1% from run to run; with many, the
group commit's batches move with timing. WORKCOUNT_PY=0 leaves the Python calls out (the daemon then runs at
near its own speed). Another tree: its `git archive` unpacked under DIR/sessiond and PYTHONPATH=DIR, as for
bench/syscalls.py. `python bench/workcount.py diff OLD.json NEW.json [KEY] [MIN]` prints what changed per append,
KEY one of by_function, by_loop, by_sql, by_vm (by_vm by default), rows that moved MIN (0.05) or more.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from _util import remove

CLIENTS = int(os.environ.get("BENCH_CLIENTS", 1))
SESSIONS = int(os.environ.get("BENCH_SESSIONS", 1))
WARM = int(os.environ.get("BENCH_WARM", 40))
APPENDS = int(os.environ.get("BENCH_APPENDS", 400)) // CLIENTS * CLIENTS
PY = os.environ.get("WORKCOUNT_PY", "1") == "1"

CLIENT = r"""
import sys, threading
from sessiond.client import Client
home, k, n, per, warm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
c = Client(home)
sids = [[c.create_session(name="workcount")["id"] for _ in range(per)] for _ in range(k)]
for s in (s for ss in sids for s in ss):
    for _ in range(warm):
        c.append(s, "user", "warm")
print("ready", flush=True)
def write(j):
    cl = Client(home)
    for i in range(n // k):
        role = "user" if i % 2 == 0 else "assistant"
        cl.append(sids[j][i % per], role, f"message {i} with a little text " + "x" * 40)
sys.stdin.readline()
threads = [threading.Thread(target=write, args=(j,)) for j in range(k)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("done", flush=True)
"""


class Counts:
    """The counters, on only between on() and off()."""

    def __init__(self) -> None:
        self.on = False
        self.loop = threading.main_thread().ident
        self.calls: collections.Counter = collections.Counter()
        self.loop_calls: collections.Counter = collections.Counter()
        self.sql: collections.Counter = collections.Counter()
        self.vm: collections.Counter = collections.Counter()

    def profile(self, frame: Any, event: str, arg: Any) -> None:
        if self.on and event == "call":
            self.calls[frame.f_code] += 1
            if threading.get_ident() == self.loop:
                self.loop_calls[frame.f_code] += 1

    def connect(self, real: Any) -> Any:
        """sqlite3.connect, each connection traced and its VM steps counted."""

        def connect(*a: Any, **k: Any) -> sqlite3.Connection:
            conn = real(*a, **k)
            last: list[str | None] = [None]

            def traced(stmt: str) -> None:
                last[0] = stmt
                if self.on:
                    self.sql[stmt] += 1

            def steps() -> int:
                if self.on:
                    self.vm[last[0]] += 1
                return 0

            conn.set_trace_callback(traced)
            conn.set_progress_handler(steps, 10)
            return conn

        return connect


def _where(filename: str) -> str:
    """A code object's file, from the package or the standard library down (the same for two trees)."""
    m = re.search(r"(?:sessiond/|wt-[^/]+/|main/)((?:storage|sync|daemon|client|cli|stores|relay|api)/.*)", filename)
    if m:
        return m.group(1)
    m = re.search(r"(?:site-packages/|python3\.\d+/)(.*)", filename)
    return m.group(1) if m else filename


def _statement(sql: str | None) -> str:
    s = re.sub(r"'(?:[^']|'')*'", "?", sql or "?")
    s = re.sub(r"\b-?\d+(?:\.\d+)?\b", "N", s)
    s = re.sub(r"\((?:\?|N|NULL|x\?|X\?)(?:,\s*(?:\?|N|NULL|x\?|X\?))*\)", "(...)", s)
    return re.sub(r"\s+", " ", s).strip()[:200]


def _per(counter: collections.Counter, key: Any, top: int = 200) -> dict:
    by: collections.Counter = collections.Counter()
    for k, n in counter.items():
        by[key(k)] += n
    return {k: round(n / APPENDS, 3) for k, n in by.most_common(top)}


def measure() -> dict:
    counts = Counts()
    sqlite3.connect = counts.connect(sqlite3.connect)  # (before the daemon opens its database)
    from sessiond.daemon import server

    home = os.path.join(tempfile.mkdtemp(prefix="sd-workcount-"), "home")
    os.makedirs(home, mode=0o700)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write("push_delay = 3600\nsync_interval = 3600\n")
    commits: list[int] = []

    def drive() -> None:
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(os.path.join(home, "sessiond.sock")):
                if time.monotonic() > deadline:
                    raise RuntimeError("the daemon did not start")
                time.sleep(0.05)
            args = [str(x) for x in (CLIENTS, APPENDS, SESSIONS, WARM)]
            child = subprocess.Popen(
                [sys.executable, "-c", CLIENT, home, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            assert child.stdin is not None and child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("the clients did not start")
            import gc

            db = next(o for o in gc.get_objects() if type(o).__name__ == "Connections")
            c0 = db.commits
            counts.on = True
            child.stdin.write("\n")
            child.stdin.flush()
            done = child.stdout.readline().strip()
            counts.on = False
            commits.append(db.commits - c0)
            child.wait(timeout=60)
            if done != "done":
                raise RuntimeError("the clients failed")
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # the daemon's own clean stop

    threading.Thread(target=drive, daemon=True).start()  # (started before the profile: not counted)
    if PY:
        threading.setprofile(counts.profile)
        sys.setprofile(counts.profile)
    try:
        asyncio.run(server.serve(home, announce=False))
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
        remove(os.path.dirname(home))

    def function(code: Any) -> str:
        return f"{_where(code.co_filename)}:{code.co_qualname}"

    for counter in (counts.calls, counts.loop_calls):  # (this file's own trace and progress callbacks)
        for code in [c for c in counter if c.co_filename == __file__]:
            del counter[code]

    return {
        "tree": os.path.dirname(os.path.dirname(server.__file__)),
        "clients": CLIENTS,
        "sessions": CLIENTS * SESSIONS,
        "appends": APPENDS,
        "commits": commits[0] if commits else None,
        "py_calls": round(sum(counts.calls.values()) / APPENDS, 2),
        "loop_calls": round(sum(counts.loop_calls.values()) / APPENDS, 2),
        "sql": round(sum(counts.sql.values()) / APPENDS, 2),
        "vm_steps": round(10 * sum(counts.vm.values()) / APPENDS, 1),
        "by_function": _per(counts.calls, function),
        "by_loop": _per(counts.loop_calls, function),
        "by_sql": _per(counts.sql, _statement),
        "by_vm": {k: round(10 * v, 1) for k, v in _per(counts.vm, _statement).items()},
    }


def diff(old_path: str, new_path: str, key: str = "by_vm", least: float = 0.05) -> None:
    with open(old_path) as f:
        old = json.load(f)
    with open(new_path) as f:
        new = json.load(f)
    for total in ("py_calls", "loop_calls", "sql", "vm_steps"):
        print(f"{total:>12} {old[total]:10} -> {new[total]}")
    rows = [(new[key].get(k, 0) - old[key].get(k, 0), k) for k in set(old[key]) | set(new[key])]
    for d, k in sorted(rows, key=lambda r: -abs(r[0])):
        if abs(d) >= least:
            print(f"{d:+10.2f} {old[key].get(k, 0):10.2f} {new[key].get(k, 0):10.2f}  {k}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["diff"]:
        diff(*sys.argv[2:4], *sys.argv[4:5], *[float(x) for x in sys.argv[5:6]])
    else:
        print(json.dumps(measure(), indent=1))
