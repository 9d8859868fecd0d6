"""Run a benchmark script several times and print one JSON record: every run's JSON, the load average
before each, and the median of each number across the runs (issue 17 asks for the median of 3 runs).

    python bench/repeat.py 3 bench/append.py [--out bench/results/append.json] [--note TEXT]

The runs go one after another; the environment passes through (LOAD_SESSIONS=... and so on).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Any


def median_of(runs: list[Any]) -> Any:
    """The median of each number found at the same place in every run (dicts by key, lists by index);
    what is not a number in every run is left out."""
    first = runs[0]
    if isinstance(first, bool) or first is None:
        return None
    if isinstance(first, (int, float)):
        if all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in runs):
            m = statistics.median(runs)
            return round(m, 3) if isinstance(m, float) else m
        return None
    if isinstance(first, dict):
        out = {}
        for k in first:
            if all(isinstance(r, dict) and k in r for r in runs):
                v = median_of([r[k] for r in runs])
                if v is not None and v != {} and v != []:
                    out[k] = v
        return out
    if isinstance(first, list) and all(isinstance(r, list) and len(r) == len(first) for r in runs):
        vals = [median_of([r[i] for r in runs]) for i in range(len(first))]
        return vals if all(v is not None for v in vals) else None
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=int)
    ap.add_argument("script")
    ap.add_argument("args", nargs="*")
    ap.add_argument("--out", help="also write the record to this file (atomically)")
    ap.add_argument("--note", default="", help="what was measured, on what code")
    a = ap.parse_args()
    runs, loads = [], []
    # the runs' folders are removed after the last run, not after each (bench/_util.py remove: on a file
    # system without a journal, one run's deleted files make the next run's file creations dearer)
    trash = tempfile.mkdtemp(prefix="sd-bench-trash-")
    env = {**os.environ, "BENCH_TRASH": trash}
    try:
        for i in range(a.runs):
            loads.append(" ".join(f"{x:.2f}" for x in os.getloadavg()))
            print(f"run {i + 1}/{a.runs}: {a.script} (load average {loads[-1]})", file=sys.stderr, flush=True)
            done = subprocess.run(
                [sys.executable, a.script, *a.args], stdout=subprocess.PIPE, check=True, text=True, env=env
            )
            runs.append(json.loads(done.stdout))
    finally:
        shutil.rmtree(trash, ignore_errors=True)
    record = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "command": f"python bench/repeat.py {a.runs} {a.script} {' '.join(a.args)}".strip(),
        "environment": {k: v for k, v in os.environ.items() if k.startswith(("LOAD_", "BENCH_", "MEMORY_"))},
        "note": a.note,
        "load_average_before": loads,
        f"median_of_{a.runs}": median_of(runs),
        "runs": runs,
    }
    text = json.dumps(record, indent=2)
    print(text)
    if a.out:
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
