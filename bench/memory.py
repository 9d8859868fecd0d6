"""Memory under load: daemon A holds 10,000 sessions, 100 of them shared and followed by daemon B through
a folder store; one client appends to random sessions (a tenth of the appends to the shared ones) for
the load period while both daemons' RSS is sampled every second. Prints JSON: the samples' summary,
whether A's RSS stayed flat (the last quarter's mean within 10% or 10 MB of the first quarter's, after
the first sample), the goal (<= 150 MB), and whether B caught up with every shared session.

Full size (issue 17): `python bench/memory.py --duration 3600`. Defaults: 10,000 sessions, 100 shared,
60 s; --sessions, --shared, --duration, --rate (appends a second) make it smaller or longer.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from _util import Daemon
from load import rss_mb

from sessiond.client import Client

GOAL_MB = 150.0


def summary(samples: list[float]) -> dict:
    q = max(1, len(samples) // 4)
    first, last = samples[1 : q + 1] or samples[:1], samples[-q:]
    m1, m2 = sum(first) / len(first), sum(last) / len(last)
    return {
        "first_mb": samples[0],
        "last_mb": samples[-1],
        "max_mb": max(samples),
        "first_quarter_mean_mb": round(m1, 1),
        "last_quarter_mean_mb": round(m2, 1),
        "flat": m2 - m1 <= max(10.0, 0.1 * m1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--shared", type=int, default=100)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load (3600 for the hour)")
    ap.add_argument("--rate", type=float, default=200.0, help="appends a second during the load")
    args = ap.parse_args()
    store_dir = tempfile.mkdtemp(prefix="sd-bench-mem-")
    url = "file://" + store_dir
    try:
        with Daemon(url) as a, Daemon(url) as b:
            ca, cb = Client(a.home), Client(b.home)
            t0 = time.monotonic()
            sids = [
                ca.create_session(name=f"s{i}", initial_messages=[{"role": "user", "content": f"hello {i}"}])["id"]
                for i in range(args.sessions)
            ]
            shared = sids[: args.shared]
            for sid in shared:
                cb.import_code(ca.share(sid)["code"])
            setup_s = time.monotonic() - t0
            rng = random.Random(17)
            samples_a: list[float] = []
            samples_b: list[float] = []
            appends = 0
            start = time.monotonic()
            next_sample = start
            while (now := time.monotonic()) - start < args.duration:
                if now >= next_sample:
                    samples_a.append(rss_mb(a.proc.pid))
                    samples_b.append(rss_mb(b.proc.pid))
                    next_sample += 1.0
                sid = rng.choice(shared) if rng.random() < 0.1 else rng.choice(sids)
                ca.append(sid, "user", f"message {appends} " + "lorem ipsum " * 10)
                appends += 1
                behind = start + appends / args.rate - time.monotonic()
                if behind > 0:
                    time.sleep(behind)  # pacing the load to --rate, not waiting for a result
            samples_a.append(rss_mb(a.proc.pid))
            samples_b.append(rss_mb(b.proc.pid))
            ca.sync(wait=True, timeout=60)
            t1 = time.monotonic()
            caught_up = False
            while time.monotonic() - t1 < 60:
                caught_up = all(
                    ca.get_session(s).get("message_count") == cb.get_session(s).get("message_count")
                    for s in shared[:20]
                )
                if caught_up:
                    break
                time.sleep(0.2)  # polling the follower with a deadline
            out = {
                "sessions": args.sessions,
                "shared_and_followed": args.shared,
                "store": "folder",
                "setup_s": round(setup_s, 1),
                "duration_s": args.duration,
                "appends": appends,
                "appends_per_second": round(appends / args.duration, 1),
                "daemon_rss": summary(samples_a),
                "follower_rss": summary(samples_b),
                "follower_caught_up": caught_up,
                "goal_mb": GOAL_MB,
                "within_goal": max(samples_a) <= GOAL_MB,
            }
            print(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
