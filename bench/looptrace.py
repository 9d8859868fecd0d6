"""Where a single append's tail goes: a daemon with every event-loop step traced, driven by one client.

Run: `python bench/looptrace.py [N]` (N single appends, 3,000 by default; `LOOPTRACE_IDLE=1` holds the sync
worker back, as bench/append.py's sync_idle does). It starts `sessiond daemon` with this file as a wrapper
(`--daemon`) that times every loop callback (`Handle._run`: start, wall, thread CPU, the task and where its
coroutine stopped), each wait in epoll, and each background WAL checkpoint (its thread), then appends N
single messages, recording each one's start and end on the same clock (CLOCK_MONOTONIC), and prints JSON:
the latencies, and for the slowest 1% the loop steps that ran while each was outstanding, grouped by what
they were. Measurement only: the tracing costs each step a few microseconds.
"""

from __future__ import annotations

import array
import asyncio
import collections
import cProfile
import gc
import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

CPU = time.thread_time
NOW = time.perf_counter  # CLOCK_MONOTONIC on Linux: one clock for the daemon and this client


def where(coro: Any) -> str | None:
    """The innermost frame of sessiond's code in the await chain of `coro`: where it is suspended."""
    loc = None
    for _ in range(50):
        if coro is None:
            break
        fr = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if fr is not None and ("sessiond" in fr.f_code.co_filename or "/wt/" in fr.f_code.co_filename):
            path = fr.f_code.co_filename
            loc = f"{path.rsplit('/', 2)[-2]}/{path.rsplit('/', 1)[-1]}:{fr.f_lineno}({fr.f_code.co_name})"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
    return loc


def traced_daemon(out_path: str, args: list[str]) -> int:
    """Run the daemon with the loop, epoll and the WAL checkpointer traced; the trace goes to out_path."""
    # Each step's figures go into flat arrays of floats and its label (a string) into a list: no object the
    # garbage collector tracks is kept per step, so that the tracing sets off fewer collections of its own.
    # The daemon alone ran one gen-0 collection in 3,000 appends; traced with tuples kept per step, 176
    # gen-0 and 16 gen-1 (1.3-2.7 ms of CPU each); this way 62 and 5: the frame objects `where` makes the
    # interpreter materialize are the rest. The "gc" figures are the tracer's, not the daemon's.
    nums = array.array("d")  # per step: start, wall, cpu, voluntary and involuntary context switches
    labels: list[str] = []
    wait_nums = array.array("d")  # per epoll wait: start, wall
    ckpts: list[tuple] = []  # (start, wall, cpu) of each background WAL checkpoint
    collections_: list[tuple] = []  # (start, wall, generation, cpu) of each run of the cyclic garbage collector
    gc_start = [0.0, 0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_start[:] = NOW(), CPU()
        else:
            collections_.append((gc_start[0], NOW() - gc_start[0], info["generation"], CPU() - gc_start[1]))

    gc.callbacks.append(on_gc)
    last_stop: dict[int, str | None] = {}
    orig_run = asyncio.events.Handle._run
    # LOOPTRACE_PROFILE=text: cProfile the steps of tasks whose coroutine's name holds it (out_path.prof)
    match = os.environ.get("LOOPTRACE_PROFILE")
    # timed in thread CPU: a step preempted on a loaded machine does not charge the wait to its calls
    prof = cProfile.Profile(CPU) if match else None

    def timed_run(self: Any) -> None:
        cb = self._callback
        task = getattr(cb, "__self__", None)
        profiled = prof is not None and isinstance(task, asyncio.Task) and match in task.get_coro().__qualname__
        if profiled:
            prof.enable()
        r0 = resource.getrusage(resource.RUSAGE_THREAD)
        c0 = CPU()
        w0 = NOW()
        try:
            orig_run(self)
        finally:
            w = NOW() - w0
            c = CPU() - c0
            if profiled:
                prof.disable()
            r1 = resource.getrusage(resource.RUSAGE_THREAD)
            if isinstance(task, asyncio.Task):
                coro = task.get_coro()
                stop = where(coro)
                label = f"{getattr(coro, '__qualname__', '?')} | {last_stop.get(id(task))} -> {stop}"
                last_stop[id(task)] = stop
            else:
                label = getattr(cb, "__qualname__", repr(cb))[:80]
            # voluntary context switches (the thread blocked: I/O, a lock) and involuntary ones (preempted)
            nums.extend((w0, w, c, r1.ru_nvcsw - r0.ru_nvcsw, r1.ru_nivcsw - r0.ru_nivcsw))
            labels.append(label)

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
    orig_select = selectors.EpollSelector.select

    def timed_select(self: Any, timeout: float | None = None) -> Any:
        w0 = NOW()
        try:
            return orig_select(self, timeout)
        finally:
            wait_nums.extend((w0, NOW() - w0))

    selectors.EpollSelector.select = timed_select  # type: ignore[method-assign]
    import sqlite3 as sqlite3_real

    from sessiond.storage import connections, wal

    class Conn:  # the checkpointer's connection, its checkpoint timed
        def __init__(self, conn: Any):
            self.conn = conn

        def execute(self, sql: str, *a: Any) -> Any:
            w0, c0 = NOW(), CPU()
            try:
                return self.conn.execute(sql, *a)
            finally:
                if "wal_checkpoint" in sql:
                    ckpts.append((w0, NOW() - w0, CPU() - c0))

        def close(self) -> None:
            self.conn.close()

    real_connect = sqlite3_real.connect

    class Sqlite:  # only the checkpointer thread's connect is wrapped
        def __getattr__(self, name: str) -> Any:
            return getattr(sqlite3_real, name)

        @staticmethod
        def connect(*a: Any, **k: Any) -> Any:
            conn = real_connect(*a, **k)
            import threading

            return Conn(conn) if threading.current_thread().name == "sessiond-db-checkpoint" else conn

    # the checkpointer's module (storage/wal.py) and the WAL reset's (connections.py)
    connections.sqlite3 = Sqlite()  # type: ignore[assignment]
    wal.sqlite3 = Sqlite()  # type: ignore[assignment]

    def dump(*_: Any) -> None:
        if prof is not None:
            prof.dump_stats(out_path + ".prof")
        with open(out_path, "w") as f:
            steps = [(*nums[5 * i : 5 * i + 3], label, *nums[5 * i + 3 : 5 * i + 5]) for i, label in enumerate(labels)]
            waits = [tuple(wait_nums[i : i + 2]) for i in range(0, len(wait_nums), 2)]
            json.dump({"steps": steps, "waits": waits, "checkpoints": ckpts, "gc": collections_}, f)

    sys.argv = ["sessiond", *args]
    from sessiond.cli.main import main

    rc = main()
    dump()
    return rc


def drive(n: int, idle: bool) -> dict:
    from sessiond.client import Client

    d = tempfile.mkdtemp(prefix="sd-looptrace-")
    home = os.path.join(d, "home")
    os.makedirs(home, mode=0o700)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write("push_delay = 3600\nsync_interval = 3600\n" if idle else "")
    trace = os.path.join(d, "trace.json")
    r, w = os.pipe()
    cmd = [sys.executable, __file__, "--daemon", trace, "daemon", "--home", home, "--ready-fd", str(w)]
    with open(os.path.join(d, "log"), "wb") as log:
        p = subprocess.Popen(cmd, pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=log)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        assert f.read(6) == b"ready\n", open(os.path.join(d, "log")).read()
    c = Client(home)
    sid = c.create_session(name="trace")["id"]
    for _ in range(200):
        c.append(sid, "user", "warm")
    spans = []
    for i in range(n):
        t = NOW()
        c.append(sid, "user", f"single message {i} with a little text in it")
        spans.append((t, NOW()))
    p.send_signal(signal.SIGTERM)
    p.wait(60)
    if os.environ.get("LOOPTRACE_PROFILE"):
        print(f"profile: {trace}.prof", file=sys.stderr)
    with open(trace) as f:
        data = json.load(f)
    with open(os.path.join(d, "spans.json"), "w") as f:
        json.dump(spans, f)
    return analyse(spans, data)


# the steps that are an append's own: its request's, its connection's read, its group commit's and the futures'
OWN = ("RequestHandler", "_SelectorSocketTransport", "Connections._flush", "shield", "Task.task_wakeup", "Future")


def kind(label: str) -> str:
    """A step's label shortened to what it was (the task's coroutine and where it resumed)."""
    return label if len(label) < 160 else label[:160]


def analyse(spans: list[tuple], data: dict) -> dict:
    steps = sorted(data["steps"])
    lat = sorted((e - s) * 1000 for s, e in spans)
    p99 = lat[int(0.99 * (len(lat) - 1))]
    slow = [(s, e) for s, e in spans if (e - s) * 1000 >= p99]
    starts = [s[0] for s in steps]
    import bisect

    culprits: collections.Counter = collections.Counter()
    culprit_us: collections.defaultdict = collections.defaultdict(float)
    examples = []
    for s, e in slow:
        i = bisect.bisect_left(starts, s - 0.01)
        inside = [st for st in steps[i:] if st[0] < e and st[0] + st[1] > s]
        busy = sum(st[1] for st in inside)
        longest = sorted(inside, key=lambda st: -st[1])[:3]
        ck = [c for c in data["checkpoints"] if c[0] < e and c[0] + c[1] > s]
        gcs = [g for g in data["gc"] if g[0] < e and g[0] + g[1] > s]
        for st in longest[:1]:
            culprits[kind(st[3])] += 1
            culprit_us[kind(st[3])] += st[1] * 1e6
        examples.append(
            {
                "ms": round((e - s) * 1000, 3),
                "loop_busy_ms": round(busy * 1000, 3),
                "steps": len(inside),
                "longest": [(round(st[1] * 1e6), round(st[2] * 1e6), st[4], st[5], kind(st[3])) for st in longest],
                "wal_checkpoint": [(round(c[1] * 1e6), round(c[2] * 1e6)) for c in ck],
                "gc": [(round(g[1] * 1e6), g[2]) for g in gcs],
            }
        )
    # every kind of step: how often, and how often over 300 us
    per: dict[str, list] = collections.defaultdict(lambda: [0, 0, 0.0, 0.0, 0, 0, 0])
    for st in steps:
        k = kind(st[3])
        per[k][0] += 1
        per[k][2] += st[1]
        per[k][3] = max(per[k][3], st[1])
        if st[1] > 0.0003:
            per[k][1] += 1
            per[k][4] += st[2] > 0.0003  # long in CPU too
            per[k][5] += st[4] > 0  # blocked
            per[k][6] += st[5] > 0  # preempted
    # per append: the loop's CPU in steps of its own (its request, its commit) and in unrelated steps that
    # ran while it was outstanding (a push, the indexer, a checkpoint): machine-independent, unlike the wall
    own_cpu, other_cpu = [], []
    j = 0
    for s, e in spans:
        while j < len(steps) and steps[j][0] + steps[j][1] < s:
            j += 1
        mine = other = 0.0
        for st in steps[j:]:
            if st[0] >= e:
                break
            if st[3].startswith(OWN):
                # (a step begun before the append was sent is the previous append's tail: its answer was
                # written inside it, so the client sent this one while it ran)
                if st[0] >= s:
                    mine += st[2]
            else:
                other += st[2]
        own_cpu.append(mine * 1e6)
        other_cpu.append(other * 1e6)
    own_cpu.sort()
    other_cpu.sort()
    long_kinds = sorted(
        ((v[1], k, v[0], round(v[2] / v[0] * 1e6), round(v[3] * 1e6), v[4], v[5], v[6]) for k, v in per.items())
    )[::-1]
    return {
        "appends": len(lat),
        "p50_ms": round(lat[len(lat) // 2], 3),
        "p99_ms": round(p99, 3),
        "max_ms": round(lat[-1], 3),
        "own_cpu_us_p50_p99": [round(own_cpu[len(own_cpu) // 2]), round(own_cpu[int(0.99 * (len(own_cpu) - 1))])],
        "unrelated_cpu_us_p99_p999": [
            round(other_cpu[int(0.99 * (len(other_cpu) - 1))]),
            round(other_cpu[int(0.999 * (len(other_cpu) - 1))]),
        ],
        "appends_behind_unrelated_over_200us_pct": round(100 * sum(x > 200 for x in other_cpu) / len(other_cpu), 2),
        "wal_checkpoints": len(data["checkpoints"]),
        "gc_runs_by_generation": [sum(g[2] == n for g in data["gc"]) for n in range(3)],
        "gc_cpu_us_median_by_generation": [
            round(sorted(g[3] for g in data["gc"] if g[2] == n)[sum(g[2] == n for g in data["gc"]) // 2] * 1e6)
            if any(g[2] == n for g in data["gc"])
            else 0
            for n in range(3)
        ],
        "slow_appends_during_gc": sum(bool(x["gc"]) for x in examples),
        "wal_checkpoint_ms": sorted(round(c[1] * 1000, 2) for c in data["checkpoints"]),
        "slow_culprits": [(k, n, round(culprit_us[k] / n)) for k, n in culprits.most_common(15)],
        "steps_over_300us": [
            {"over": o, "cpu_over": co, "blocked": b, "preempted": pr, "kind": k, "n": n, "mean_us": m, "max_us": x}
            for o, k, n, m, x, co, b, pr in long_kinds[:20]
            if o
        ],
        "slow": sorted(examples, key=lambda x: -x["ms"]),
    }


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--daemon":
        sys.exit(traced_daemon(sys.argv[2], sys.argv[3:]))
    print(
        json.dumps(
            drive(int(sys.argv[1]) if len(sys.argv) > 1 else 3000, bool(os.environ.get("LOOPTRACE_IDLE"))), indent=1
        )
    )
