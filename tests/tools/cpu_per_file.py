"""The CPU each test file costs, with everything it starts: prints JSON, the files most costly first.

Each file runs alone (`python -m pytest -q -p no:cacheprovider tests/FILE`, no xdist) in a process of a pool; each
pool process is a child subreaper (Linux's PR_SET_CHILD_SUBREAPER), so what the run starts and leaves behind
(the fork server's children, daemons started with a new session, relays, model servers) is re-parented to it
when its parent goes, and reaped by it: the rusage of every process of the file's tree, however started, ends
in the pool process's RUSAGE_CHILDREN. The delta around one file is that file's CPU (user + sys), whatever else
runs on the machine (the CPU time of a process is not another's; a loaded machine inflates it a little, cache
and frequency: repeat and take the minimum, --repeat).

`pytest_own` is the pytest process's own share (the tests' code, in-process clients; tests/tools/cpu_self.py
reports it), the rest the processes it started; `forked` the fork server's children by command (their count and
CPU, the six most costly: tests/forkserver.py logs each one's rusage where FORKSERVER_RUSAGE_LOG says).
Each row also counts the processes the file started (the delta of the machine's `processes` counter of
/proc/stat, which counts every fork: only meaningful on a quiet machine or with --jobs 1) and its wall time.
A file run alone pays what the suite pays once per worker: pytest's start and the fork server's imports; the
`baseline` row (a run of `--collect-only` of one small file, and a fork server started and closed) is that
fixed cost, to subtract from each row when comparing with a whole run.

  .venv/bin/python tests/tools/cpu_per_file.py [--jobs 2] [--repeat 1] [--top 30] [FILE ...]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TESTS = os.path.join(ROOT, "tests")
PR_SET_CHILD_SUBREAPER = 36


def _subreaper() -> None:
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_CHILD_SUBREAPER")


def _forks() -> int:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("processes "):
                return int(line.split()[1])
    return 0


def _reap(deadline: float) -> int:
    """Wait for every descendant re-parented here (a run's leftovers) until none is left or the deadline."""
    left = 0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return left
        if pid == 0:
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.05)


def _cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime, r.ru_stime


def measure(argv: list[str]) -> dict:
    """One command's CPU with all it started, in this (subreaper) process."""
    _subreaper()
    _reap(time.monotonic() + 30)
    u0, s0 = _cpu()
    f0, w0 = _forks(), time.monotonic()
    fd, self_file = tempfile.mkstemp(prefix="cpu-self-")
    os.close(fd)
    fd, fork_log = tempfile.mkstemp(prefix="cpu-forked-")
    os.close(fd)
    env = {
        **os.environ,
        "CPU_SELF_FILE": self_file,
        "FORKSERVER_RUSAGE_LOG": fork_log,
        "PYTHONPATH": os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p),
    }
    rc = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - w0
    leftover = _reap(time.monotonic() + 60)
    u1, s1 = _cpu()
    with open(self_file) as f:
        own = sum(float(x) for x in f.read().split()) if argv[1:3] == ["-m", "pytest"] else 0.0
    os.unlink(self_file)
    forked: dict[str, list[float]] = {}  # the fork server's children by command: [count, CPU]
    with open(fork_log) as f:
        for line in f:
            child = json.loads(line)
            args = child["args"]
            cmd = args[0] if args[:1] != ["store"] else " ".join(args)
            row = forked.setdefault(cmd, [0, 0.0])
            row[0] += 1
            row[1] = round(row[1] + child["user"] + child["sys"], 2)
    os.unlink(fork_log)
    return {
        "user": round(u1 - u0, 2),
        "sys": round(s1 - s0, 2),
        "cpu": round(u1 - u0 + s1 - s0, 2),
        "pytest_own": round(own, 2),  # the pytest process's own CPU (tests' code, in-process clients)
        "wall": round(wall, 2),
        "forks": _forks() - f0,
        "rc": rc,
        "leftover": leftover,
        "forked": dict(sorted(forked.items(), key=lambda kv: -kv[1][1])[:6]),
    }


def pytest_argv(name: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        "-p",
        "cpu_self",
        f"tests/{name}",
    ]


def baseline_argvs() -> dict[str, list[str]]:
    fork = (
        "import sys; sys.path.insert(0, 'tests'); from forkserver import ForkServer; "
        f"s = ForkServer({sys.executable!r}); s.close()"
    )
    return {
        "pytest start": [*pytest_argv("test_version.py"), "--collect-only"],
        "fork server": [sys.executable, "-c", fork],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", help="test files (names under tests/); all test_*.py if none")
    ap.add_argument("--jobs", type=int, default=2, help="files measured at once (each alone in its process)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each file; its row is the least CPU")
    ap.add_argument("--top", type=int, default=0, help="print only the N most costly files (0: all)")
    args = ap.parse_args()
    names = [os.path.basename(f) for f in args.files] or sorted(
        f for f in os.listdir(TESTS) if f.startswith("test_") and f.endswith(".py")
    )
    sys.path.insert(0, TESTS)
    from fileorder import LONGEST_FIRST  # the long files first, so the pool's tail is short

    rank = {n: i for i, n in enumerate(LONGEST_FIRST)}
    names.sort(key=lambda n: rank.get(n, len(rank)))
    jobs = [(n, pytest_argv(n)) for n in names for _ in range(args.repeat)]
    jobs += [(k, v) for k, v in baseline_argvs().items()]
    rows: dict[str, dict] = {}
    start = time.monotonic()
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(measure, argv): name for name, argv in jobs}
        for fut in concurrent.futures.as_completed(futures):
            name, row = futures[fut], fut.result()
            if name not in rows or row["cpu"] < rows[name]["cpu"]:
                rows[name] = row
            print(f"{name}: {row}", file=sys.stderr, flush=True)
    base = {k: rows.pop(k) for k in baseline_argvs()}
    ordered = sorted(rows.items(), key=lambda kv: -kv[1]["cpu"])
    out = {
        "total_cpu": round(sum(r["cpu"] for r in rows.values()), 1),
        "total_wall": round(sum(r["wall"] for r in rows.values()), 1),
        "elapsed": round(time.monotonic() - start, 1),
        "files": len(rows),
        "failed": sorted(n for n, r in rows.items() if r["rc"] not in (0, 5)),
        "baseline": base,
        "per_file": dict(ordered[: args.top] if args.top else ordered),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
