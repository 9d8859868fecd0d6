"""Memory under load: daemon A holds 10,000 sessions, 100 of them shared and followed by daemon B through
a folder store; one client appends to random sessions (a tenth of the appends to the shared ones) for
the load period while both daemons' RSS is sampled every second. Prints JSON: per daemon the peak, the
end, the slope (MB per hour, least squares) and whether RSS stayed flat (see `summary`), the goal
(<= 150 MB, both daemons), and whether B caught up with the shared sessions (`follower`: A's `sync --wait`
answer, and for each shared session still different, both sides' counts and sync states and why: see
`check_follower`).

Full size (issue 17): `python bench/memory.py --duration 3600`. Defaults: 10,000 sessions, 100 shared,
60 s; --sessions, --shared, --duration, --rate (appends a second) make it smaller or longer.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(__file__))
from _util import Daemon, remove
from load import rss_mb

from sessiond.client import Client

GOAL_MB = 150.0


# The floor's process (bare_floor): the libraries the daemon imports, an aiohttp server on a Unix socket with
# no route, then the database read through two connections with SQLite's default page cache (the daemon's
# writer and API reader have that cache; its third, a push's long reads, maps the file instead)
FLOOR_CODE = """
import asyncio, os, sqlite3, sys
import aiohttp, blake3, cbor2, nacl.bindings, nacl.signing, platformdirs, pydantic, yarl
from aiohttp import web

def rss():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon"):
                out[k] = round(int(v.split()[0]) / 1024, 1)
    return out

async def main(db, sock):
    runner = web.AppRunner(web.Application())
    await runner.setup()
    await web.UnixSite(runner, sock).start()
    bare = rss()
    conns = [sqlite3.connect(f"file:{db}?mode=ro", uri=True) for _ in range(2)]
    for c in conns:  # every table read once on each connection (its cache, 2 MiB by default, fills)
        names = [r[0] for r in c.execute("SELECT name FROM sqlite_schema WHERE type='table'")]
        for name in names:
            for _ in c.execute(f'SELECT * FROM "{name}"'):
                pass
    cached = rss()
    await runner.cleanup()
    print(repr((bare, cached)))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def bare_floor(db: str) -> dict:
    """The memory floor, in a process of its own (FLOOR_CODE): its RSS with the libraries imported and the
    socket served, and again once two connections read the whole database `db` (read-only) through
    SQLite's default page cache; the database's size beside them."""
    sock = os.path.join(tempfile.mkdtemp(prefix="sd-bench-floor-"), "s")
    try:
        done = subprocess.run([sys.executable, "-c", FLOOR_CODE, db, sock], capture_output=True, text=True, check=True)
    finally:
        remove(os.path.dirname(sock))
    bare, cached = ast.literal_eval(done.stdout.strip())
    return {
        "bare_process_mb": bare["VmRSS"],
        "bare_process_anon_mb": bare["RssAnon"],
        "with_page_cache_mb": cached["VmRSS"],
        "database_mb": round(os.path.getsize(db) / 1e6, 1),
        "wal_mb": round(os.path.getsize(db + "-wal") / 1e6, 1) if os.path.exists(db + "-wal") else 0.0,
    }


def slope_mb_per_hour(samples: list[float], period: float = 1.0) -> float:
    """The least-squares slope of RSS over time, in MB per hour (samples `period` seconds apart)."""
    n = len(samples)
    if n < 2:
        return 0.0
    xs = [i * period for i in range(n)]
    mx, my = sum(xs) / n, sum(samples) / n
    var = sum((x - mx) ** 2 for x in xs)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, samples)) / var * 3600, 1)


def summary(samples: list[float], anon: list[float], duration: float) -> dict:
    """Peak, end, the fit's slope, and whether flat: the last quarter's mean within 10% or 10 MB of the
    first quarter's (after the first sample), and, for a run of 10 minutes or more, the second half's
    slope under 10 MB an hour (warm-up excluded; a shorter run's slope is mostly noise, reported only)."""
    q = max(1, len(samples) // 4)
    first, last = samples[1 : q + 1] or samples[:1], samples[-q:]
    m1, m2 = sum(first) / len(first), sum(last) / len(last)
    late = slope_mb_per_hour(samples[len(samples) // 2 :])
    flat = m2 - m1 <= max(10.0, 0.1 * m1) and (duration < 600 or late <= 10.0)
    return {
        "first_mb": samples[0],
        "peak_mb": max(samples),
        "end_mb": samples[-1],
        "first_quarter_mean_mb": round(m1, 1),
        "last_quarter_mean_mb": round(m2, 1),
        "slope_mb_per_hour": slope_mb_per_hour(samples),
        "second_half_slope_mb_per_hour": late,
        "flat": flat,
        # RssAnon: the process's own heap, without the database pages mapped (the OS page cache's)
        "anon_peak_mb": max(anon),
        "anon_end_mb": anon[-1],
    }


def dump_tracemalloc(daemons: list[Daemon], out_dir: str, tag: str) -> None:
    """SIGUSR2 to each daemon (started with SESSIOND_TRACEMALLOC or SESSIOND_MEMSTATS): its dump, copied out
    (daemon/memdebug.py; the atomic write means a file that shows up is whole)."""
    for name, d in zip("ab", daemons):
        before = set(os.listdir(d.home))
        d.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            new = [f for f in set(os.listdir(d.home)) - before if f.startswith(("tracemalloc-", "memstats-"))]
            if new:
                shutil.copy(os.path.join(d.home, new[0]), os.path.join(out_dir, f"{name}-{tag}.txt"))
                break
            time.sleep(0.1)  # polling for the dump with a deadline


def create_sessions(home: str, n: int, threads: int = 4) -> list[str]:
    """`n` sessions of one message each, made by a few clients at once (the setup, not the measure)."""

    def make(i: int) -> str:
        c = clients.setdefault(threading.get_ident(), Client(home))
        return c.create_session(name=f"s{i}", initial_messages=[{"role": "user", "content": f"hello {i}"}])["id"]

    clients: dict[int, Client] = {}
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(make, range(n)))


def _sync_view(st: dict | None) -> dict:
    """The part of a session's sync state that says who is behind: A's pushes, B's pull error."""
    st = st or {}
    keys = ("state", "pending", "last_seq", "pushed_seq", "head_rev", "last_error", "pull_error")
    return {k: st[k] for k in keys if k in st}


def check_follower(ca: Client, cb: Client, shared: list[str], wait: float = 60.0) -> dict:
    """After the load: A's `sync --wait` (its answer kept: a sync that timed out leaves A's pushes behind,
    and B cannot have what A has not pushed), the shared sessions still not pushed then pushed one by one
    (`sync --wait` of each on A), then every shared session compared (message counts of A
    and B) until they all match or `wait` seconds pass. What still differs is told apart: each session's
    state on A (pushed_seq against last_seq) and on B (pull_error), then a pull asked of B for that
    session (`sync --wait` on B) and the counts again: matching after it means B's own polls missed a
    change that was in the store (a follower bug); not matching with A fully pushed means a pull that
    does not bring it in (a follower bug too); A not fully pushed means the writer was behind."""
    t0 = time.monotonic()
    answer = ca.sync(wait=True, timeout=60)
    sync_s = time.monotonic() - t0
    states = answer.get("sessions", {})
    behind = sorted(s for s, st in states.items() if st.get("pushed_seq", 0) < st.get("last_seq", 0))
    late = [s for s in shared if s in set(behind)]
    out: dict = {
        "a_sync_wait_s": round(sync_s, 1),
        "a_sync_complete": answer.get("complete"),
        "a_sessions_not_pushed_at_sync_end": len(behind),
        "a_shared_not_pushed_at_sync_end": len(late),
    }
    # B can only have what A pushed: a loaded A is behind on all its sessions' pushes, so the shared
    # ones still pending are pushed now, each ahead of the queue (`sync --wait` of that session)
    t0 = time.monotonic()
    for sid in late:
        ca.sync(sid, wait=True, timeout=60)
    out["a_shared_pushed_by_hand_s"] = round(time.monotonic() - t0, 1)
    left = set(shared)
    t1 = time.monotonic()
    while left and time.monotonic() - t1 < wait:
        left = {s for s in left if ca.get_session(s).get("message_count") != cb.get_session(s).get("message_count")}
        if left:
            time.sleep(0.2)  # polling the follower with a deadline
    out["caught_up"] = not left
    out["compared"] = len(shared)
    out["caught_up_after_s"] = round(time.monotonic() - t1, 1) if not left else None
    unmatched = []
    for sid in sorted(left):
        sa, sb = ca.get_session(sid), cb.get_session(sid)
        row = {
            "session": sid,
            "a_messages": sa.get("message_count"),
            "b_messages": sb.get("message_count"),
            "a_sync": _sync_view(sa.get("sync")),
            "b_sync": _sync_view(sb.get("sync")),
        }
        cb.sync(sid, wait=True, timeout=30)  # B pulls this session now, by hand
        row["b_messages_after_pull"] = cb.get_session(sid).get("message_count")
        a_pushed = row["a_sync"].get("pushed_seq", 0) >= row["a_sync"].get("last_seq", 0)
        if row["b_messages_after_pull"] == row["a_messages"]:
            row["why"] = "B's polls missed a change in the store (a pull by hand brought it in)"
        elif not a_pushed:
            row["why"] = "A had not pushed it (the writer behind)"
        else:
            row["why"] = "A pushed it, and B's pull by hand does not bring it in"
        unmatched.append(row)
    out["unmatched"] = unmatched
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--shared", type=int, default=100)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load (3600 for the hour)")
    ap.add_argument("--rate", type=float, default=200.0, help="appends a second during the load")
    ap.add_argument(
        "--tracemalloc",
        metavar="DIR",
        help="run the daemons with SESSIOND_TRACEMALLOC=1 and put their allocation-site dumps (after the setup, "
        "every 5 minutes, at the end) in DIR; RSS is then not the daemons' own",
    )
    ap.add_argument(
        "--memstats",
        metavar="DIR",
        help="run the daemons with SESSIOND_MEMSTATS=1 (no tracing: RSS stays their own) and put their dumps "
        "(resident memory by kind, glibc's and SQLite's counters, live objects by type) in DIR, as --tracemalloc",
    )
    args = ap.parse_args()
    if args.tracemalloc:
        os.makedirs(args.tracemalloc, exist_ok=True)
        os.environ["SESSIOND_TRACEMALLOC"] = "1"
    if args.memstats:
        os.makedirs(args.memstats, exist_ok=True)
        os.environ["SESSIOND_MEMSTATS"] = "1"
    dumps = args.tracemalloc or args.memstats
    store_dir = tempfile.mkdtemp(prefix="sd-bench-mem-")
    url = "file://" + store_dir
    try:
        with Daemon(url) as a, Daemon(url) as b:
            ca, cb = Client(a.home), Client(b.home)
            t0 = time.monotonic()
            sids = create_sessions(a.home, args.sessions)
            shared = sids[: args.shared]
            for sid in shared:
                cb.import_code(ca.share(sid)["code"])
            setup_s = time.monotonic() - t0
            if dumps:
                dump_tracemalloc([a, b], dumps, "0-start")
            rng = random.Random(17)
            samples_a: list[float] = []
            samples_b: list[float] = []
            anon_a: list[float] = []
            anon_b: list[float] = []
            appends = 0
            start = time.monotonic()
            next_sample = start
            while (now := time.monotonic()) - start < args.duration:
                if now >= next_sample:
                    samples_a.append(rss_mb(a.proc.pid))
                    samples_b.append(rss_mb(b.proc.pid))
                    anon_a.append(rss_mb(a.proc.pid, "RssAnon"))
                    anon_b.append(rss_mb(b.proc.pid, "RssAnon"))
                    next_sample += 1.0
                    if dumps and len(samples_a) % 300 == 0:
                        dump_tracemalloc([a, b], dumps, f"{len(samples_a):05d}s")
                sid = rng.choice(shared) if rng.random() < 0.1 else rng.choice(sids)
                ca.append(sid, "user", f"message {appends} " + "lorem ipsum " * 10)
                appends += 1
                behind = start + appends / args.rate - time.monotonic()
                if behind > 0:
                    time.sleep(behind)  # pacing the load to --rate, not waiting for a result
            samples_a.append(rss_mb(a.proc.pid))
            samples_b.append(rss_mb(b.proc.pid))
            anon_a.append(rss_mb(a.proc.pid, "RssAnon"))
            anon_b.append(rss_mb(b.proc.pid, "RssAnon"))
            if dumps:
                dump_tracemalloc([a, b], dumps, "9-end")
            follower = check_follower(ca, cb, shared)
            floor = bare_floor(os.path.join(a.home, "sessions.db"))
            wal = os.path.join(a.home, "sessions.db-wal")
            out = {
                "date": time.strftime("%Y-%m-%d"),
                "loadavg": [round(x, 2) for x in os.getloadavg()],
                "command": "python bench/memory.py " + " ".join(sys.argv[1:]),
                "sessions": args.sessions,
                "shared_and_followed": args.shared,
                "store": "folder",
                "setup_s": round(setup_s, 1),
                "duration_s": args.duration,
                "appends": appends,
                "appends_per_second": round(appends / args.duration, 1),
                "daemon_rss": summary(samples_a, anon_a, args.duration),
                "follower_rss": summary(samples_b, anon_b, args.duration),
                "follower_caught_up": follower["caught_up"],
                "follower": follower,
                "daemon_wal_mb_end": round(os.path.getsize(wal) / 1e6, 1) if os.path.exists(wal) else 0.0,
                # the same run's floor: a bare process of the same libraries and socket, and SQLite's page
                # cache for daemon A's database as it is at the end (bare_floor)
                "floor": floor,
                "goal_mb": GOAL_MB,
                "within_goal": max(samples_a) <= GOAL_MB and max(samples_b) <= GOAL_MB,
            }
            print(json.dumps(out, indent=2))
    finally:
        remove(store_dir)


if __name__ == "__main__":
    main()
