"""Load: many sessions written by concurrent clients on daemon A while daemon B follows them all through
a shared store. Checks that nothing fails, that both sides end identical, and reports throughput and
both daemons' memory (RSS). Prints JSON.

Full size (issue 6): 1,000 sessions x 100 messages from 16 clients: `python bench/load.py`.
LOAD_SESSIONS, LOAD_MESSAGES, LOAD_CLIENTS make it smaller (the test suite runs a small one).
LOAD_PROCS spreads the clients over that many processes (default 1: threads of this one), for when
the bench's own GIL is the limit: `bench_cpu_seconds` says how much CPU the clients used.

CPU: `machine` says what bounds the rate (see machine_row). `cpu_ms_per_append` is daemon A's user+system
CPU during the writes divided by the appends (its start-up is not counted; it includes each session's
create and share and the pushes meanwhile);
`pushes_per_second` is A's pushes started during the writes (GET /v1/status `pushes`);
`a_store_writes_per_batch` the objects and heads A's folder store wrote per batch (status `stores`);
`b_head_polls` how B's follower found the changed heads: full listings of the heads folder and records
of the folder's change journal read instead (stores/headjournal.py).

The tail: `b_caught_up_seconds_after_writes` is how long after the last write daemon B held every message,
with nothing pressed (no `sessiond sync`): B's count is read every 0.05 s. `tail` says where that time went:
what A had still to push and B still to pull when the writes ended, when A had pushed everything
(`a_pushed_at`), and, for the sessions pushed after the end, how long from a session's last append to its
last push (`append_to_push`), from that push to B applying it (`push_to_apply`) and in all
(`append_to_apply`), read from both daemons' event streams (GET /v1/events: `sync.pushed` on A, the
apply events on B). LOAD_TRACE=1 adds the samples.

LOAD_TRANSPORT: how the clients append, `stream` (the default, as the client does: the append stream,
GET /v1/appends) or `http` (a POST per append); `transport` in the output says which.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from _util import Daemon, cpu_split, remove

from sessiond.client import Client


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory; field RssAnon is the process's own heap, without the file pages it maps (the
    read connection maps the database file, and those pages belong to the OS page cache)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    return round(sum(cpu_split(pid)), 1)


def runqueue_wait(pid: int) -> float:
    """Seconds the process's main thread (daemon A's event loop) has waited, runnable, for a CPU so far
    (/proc schedstat: CPU contention, not its own sleeps); 0 where the kernel does not say."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy() -> tuple[float, float]:
    """Seconds of CPU the whole machine has spent busy (every core: user, nice, system, irq, softirq, steal)
    and idle (idle, iowait) so far, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    tick = os.sysconf("SC_CLK_TCK")
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / tick, (v[3] + v[4]) / tick


def own_cpu() -> float:
    """This process's user + system CPU so far (the bench's own clients, when they are threads here)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def machine_row(
    appends: int, write_s: float, ours_s: float, loop_s: float, busy_idle: tuple[float, float], queued_s: float
) -> dict:
    """What bounds the rate on this machine, during the writes: daemon A's event-loop thread (its CPU per
    append; the share of the time it ran, and waited runnable for a CPU: together near 1.0, it is the limit),
    and the CPU of the two daemons and the clients together per append, with the ceiling that puts on the
    rate if every core were busy with nothing else (`ceiling_appends_per_second`: cores / that CPU).
    `busy_cores`: what /proc/stat says the whole machine used meanwhile, others' processes included."""
    cores = os.cpu_count() or 1
    busy, idle = busy_idle
    per = ours_s / appends
    return {
        "cores": cores,
        "busy_cores": round(busy / write_s, 2),
        "idle_cores": round(idle / write_s, 2),
        "a_loop_thread_ms_per_append": round(1000 * loop_s / appends, 3),
        "a_loop_thread_busy": round(loop_s / write_s, 2),
        "a_loop_thread_waiting_for_a_cpu": round(queued_s / write_s, 2),
        "a_b_clients_cpu_ms_per_append": round(1000 * per, 3),
        "ceiling_appends_per_second": round(cores / per) if per else None,
    }


def transport() -> str:
    """LOAD_TRANSPORT: stream (the default) or http."""
    t = os.environ.get("LOAD_TRANSPORT", "stream")
    if t not in ("stream", "http"):
        raise SystemExit(f"LOAD_TRANSPORT must be stream or http, not {t!r}")
    return t


def clients_of(a_home: str, b_home: str, ks: list[int], sessions: int, messages: int, clients: int) -> tuple:
    """Run clients number `ks` (threads of this process); returns (errors, sessions made, CPU used)."""
    streamed = transport() == "stream"
    errors: list[str] = []
    made: list[str] = []
    last: dict[str, float] = {}  # session -> wall time its last append was answered
    lock = threading.Lock()
    cpu0 = own_cpu()

    def client(k: int) -> None:
        ca, cb = Client(a_home, append_stream=streamed), Client(b_home)
        step = "start"
        try:
            for n in range(k, sessions, clients):
                step = f"create {n}"
                sid = ca.create_session(name=f"load {n}", user=f"user{n % 7}")["id"]
                step = f"share {sid}"
                code = ca.share(sid, write=True)["code"]
                step = f"import {sid}"
                cb.import_code(code)
                with lock:
                    made.append(sid)
                for i in range(messages):
                    step = f"append {i} to {sid}"
                    ca.append(sid, "user" if i % 2 == 0 else "assistant", f"session {n} message {i} " + "x" * 60)
                last[sid] = time.time()
        except Exception as exc:  # every error is a finding
            errors.append(f"client {k}, {step}: {exc}")
        finally:
            ca.close()
            cb.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in ks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors, made, own_cpu() - cpu0, last


class Tail:
    """After the writes: when B holds everything, and where the time went (see the module's doc)."""

    def __init__(self, a_home: str, b_home: str, total: int):
        self.total = total
        self.pushed: dict[str, float] = {}  # session -> wall time of A's last sync.pushed seen
        self.applied: dict[str, float] = {}  # session -> wall time of B's last apply event seen
        self.streams = [Client(a_home).event_stream(), Client(b_home).event_stream()]
        for stream, seen, kind in zip(self.streams, (self.pushed, self.applied), ("sync.pushed", "session.synced")):
            threading.Thread(target=self._listen, args=(stream, seen, kind), daemon=True).start()

    @staticmethod
    def _listen(stream, seen: dict[str, float], kind: str) -> None:
        for ev in stream:
            if ev.get("type") == kind and ev.get("new", 1):  # on B: a pull that brought something
                seen[ev["session"]] = time.time()

    def run(self, ca: Client, cb: Client, timeout: float, last: dict[str, float]) -> tuple[float, dict]:
        t_end, w_end = time.perf_counter(), time.time()
        samples: list[list] = []
        a_pushed_at = None
        a_pending0 = b_missing0 = None
        deadline = time.monotonic() + timeout
        pressed = False
        while True:
            now = time.perf_counter() - t_end
            b_missing = self.total - cb.status()["counts"]["messages"]
            a_pending = None
            if a_pushed_at is None or b_missing:
                a_pending = sum(st["pending"] for st in ca.status()["sync"].values())
                if not a_pending and a_pushed_at is None:
                    a_pushed_at = round(now, 2)
            if a_pending0 is None:
                a_pending0, b_missing0 = a_pending, b_missing
            samples.append([round(now, 2), a_pending, b_missing])
            if not b_missing:
                break
            if time.monotonic() > deadline:
                if pressed:
                    break
                pressed = True  # B did not catch up by itself: press `sync` on A, as an older bench did
                ca.sync(wait=True, timeout=60)
                deadline = time.monotonic() + timeout
            time.sleep(0.05)
        caught_up = time.perf_counter() - t_end
        for s in self.streams:
            s.close()
        tail_sids = [sid for sid, t in self.pushed.items() if t >= w_end]
        a2p = sorted(self.pushed[sid] - last[sid] for sid in tail_sids if sid in last)
        p2a = sorted(self.applied[sid] - self.pushed[sid] for sid in tail_sids if sid in self.applied)
        a2a = sorted(self.applied[sid] - last[sid] for sid in tail_sids if sid in self.applied and sid in last)

        def spread(xs: list[float]) -> dict:
            return {"n": len(xs), "median": round(xs[len(xs) // 2], 3), "max": round(xs[-1], 3)} if xs else {"n": 0}

        out = {
            "a_unpushed_at_end": a_pending0,
            "b_missing_at_end": b_missing0,
            "a_pushed_at": a_pushed_at,
            "sessions_pushed_after_end": len(tail_sids),
            "last_push_at": round(max(self.pushed.values()) - w_end, 2) if self.pushed else None,
            "last_apply_at": round(max(self.applied.values()) - w_end, 2) if self.applied else None,
            "append_to_push": spread(a2p),
            "push_to_apply": spread(p2a),
            "append_to_apply": spread(a2a),  # a tail session's last append -> B applying it
            "sync_pressed": pressed,
        }
        if os.environ.get("LOAD_TRACE"):
            out["samples"] = samples[:: max(1, len(samples) // 40)]
        return caught_up, out


def run(sessions: int = 1000, messages: int = 100, clients: int = 16, timeout: float = 600, procs: int = 1) -> dict:
    folder = tempfile.mkdtemp(prefix="sd-load-")
    try:
        return _run(f"file://{folder}/store", sessions, messages, clients, timeout, max(1, min(procs, clients)))
    finally:
        remove(folder)


def _run(store: str, sessions: int, messages: int, clients: int, timeout: float, procs: int) -> dict:
    out: dict = {
        "transport": transport(),
        "sessions": sessions,
        "messages_per_session": messages,
        "clients": clients,
        "client_processes": procs,
    }
    with Daemon(store) as a, Daemon(store) as b:
        peak = {"a": 0.0, "b": 0.0}
        peak_anon = {"a": 0.0, "b": 0.0}
        done = threading.Event()

        def sampler() -> None:
            while not done.is_set():
                for name, d in (("a", a), ("b", b)):
                    peak[name] = max(peak[name], rss_mb(d.proc.pid))
                    peak_anon[name] = max(peak_anon[name], rss_mb(d.proc.pid, "RssAnon"))
                time.sleep(0.2)

        threading.Thread(target=sampler, daemon=True).start()
        cpu0 = {"a": cpu_split(a.proc.pid), "b": cpu_split(b.proc.pid)}
        loop0, machine0, queued0 = sum(cpu_split(a.proc.pid, a.proc.pid)), machine_busy(), runqueue_wait(a.proc.pid)
        with Client(a.home) as c0:
            pushes0 = c0.status().get("pushes", {}).get("started", 0)  # an older daemon: 0
        t0 = time.perf_counter()
        groups = [list(range(p, clients, procs)) for p in range(procs)]
        if procs == 1:
            errors, made, bench_cpu, last = clients_of(a.home, b.home, groups[0], sessions, messages, clients)
        else:  # fresh processes (spawn): no threads of this one carried over
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(procs, mp_context=ctx) as pool:
                parts = list(
                    pool.map(clients_of, *zip(*[(a.home, b.home, g, sessions, messages, clients) for g in groups]))
                )
            errors = [e for p in parts for e in p[0]]
            made = [m for p in parts for m in p[1]]
            bench_cpu = sum(p[2] for p in parts)
            last = {sid: t for p in parts for sid, t in p[3].items()}
        write_s = time.perf_counter() - t0
        cpu1 = {"a": cpu_split(a.proc.pid), "b": cpu_split(b.proc.pid)}
        loop1, machine1, queued1 = sum(cpu_split(a.proc.pid, a.proc.pid)), machine_busy(), runqueue_wait(a.proc.pid)
        ca, cb = Client(a.home), Client(b.home)
        st = ca.status()
        pushes = st.get("pushes", {}).get("started", 0) - pushes0
        a_store = (st.get("stores") or [{}])[0]  # a folder store's batched writes (an older daemon: none)
        tail = Tail(a.home, b.home, sessions * messages)
        converge_s, tail_out = tail.run(ca, cb, timeout, last)
        ta, tb = ca.status()["counts"], cb.status()["counts"]
        identical = True
        for sid in made[:: max(1, len(made) // 50)]:  # compare a spread of sessions message by message
            ma = [m["id"] for m in ca.messages(sid, limit=messages + 10)["messages"]]
            mb = [m["id"] for m in cb.messages(sid, limit=messages + 10)["messages"]]
            identical &= ma == mb and len(ma) == messages
        done.set()
        b_store = (cb.status().get("stores") or [{}])[0]
        out.update(
            {
                "errors": errors[:20],
                "error_count": len(errors),
                "messages_written": ta["messages"],
                "messages_on_b": tb["messages"],
                "identical": identical and ta["messages"] == tb["messages"] == sessions * messages,
                "write_seconds": round(write_s, 2),
                "appends_per_second": round(sessions * messages / write_s, 1),
                "b_caught_up_seconds_after_writes": round(converge_s, 2),
                "tail": tail_out,
                "rss_mb_peak": peak,
                "rss_mb_end": {"a": rss_mb(a.proc.pid), "b": rss_mb(b.proc.pid)},
                "rss_anon_mb_peak": peak_anon,
                "cpu_seconds": {"a": cpu_s(a.proc.pid), "b": cpu_s(b.proc.pid)},
                # during the writes only: user and system seconds, and A's per append
                "cpu_during_writes": {
                    k: {"user": round(cpu1[k][0] - cpu0[k][0], 2), "system": round(cpu1[k][1] - cpu0[k][1], 2)}
                    for k in ("a", "b")
                },
                "cpu_ms_per_append": round(1000 * (sum(cpu1["a"]) - sum(cpu0["a"])) / (sessions * messages), 3),
                "bench_cpu_seconds": round(bench_cpu, 2),
                "machine": machine_row(
                    sessions * messages,
                    write_s,
                    sum(cpu1["a"]) - sum(cpu0["a"]) + sum(cpu1["b"]) - sum(cpu0["b"]) + bench_cpu,
                    loop1 - loop0,
                    (machine1[0] - machine0[0], machine1[1] - machine0[1]),
                    queued1 - queued0,
                ),
                "pushes_per_second": round(pushes / write_s, 1),
                "appends_per_push": round(sessions * messages / max(1, pushes), 1),
                "b_head_polls": {k: b_store.get(k) for k in ("head_listings", "journal_records")},
                "a_store_writes_per_batch": round(
                    a_store.get("writes", 0) / max(1, a_store.get("write_batches", 0)), 2
                ),
            }
        )
    return out


if __name__ == "__main__":
    print(
        json.dumps(
            run(
                int(os.environ.get("LOAD_SESSIONS", 1000)),
                int(os.environ.get("LOAD_MESSAGES", 100)),
                int(os.environ.get("LOAD_CLIENTS", 16)),
                procs=int(os.environ.get("LOAD_PROCS", 1)),
            ),
            indent=2,
        )
    )
