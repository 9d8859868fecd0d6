"""The benchmarks of this tree beside those of an older revision, in one run. Prints JSON.

    python bench/compare.py [--old REV] [--rounds N] [--out bench/results/compare.json]

REV (default e5884fe, the last commit before issue 14's restructuring) is exported with `git archive`
into its own folder (under the system's temporary folder, or --dir) with its own venv (`python -m venv`,
`pip install -e .`): a tree of that revision that registers nothing in the repository, kept and reused
by later runs. Then append.py, push.py and import.py of EACH tree run with that tree's own Python,
interleaved: each round runs every benchmark once on both sides, old first in even rounds and new first
in odd ones, so that a machine that slows down or speeds up during the run weighs on both alike.

The sizes are small (the environment variables the scripts read, SIZES below; set any of them to
override), so a run takes a few minutes: these are comparisons, not the figures of the targets.

The JSON has, per side, every run's output; and per measure (a numeric leaf of a script's output,
its targets left out) both sides' median over the rounds, their range, and new/old. "better" says
which way is good for that measure (by its name: times lower, rates higher); "within_noise" says the
two sides' ranges overlap. The machine's load (os.getloadavg) is noted before and after each run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from _util import remove

HERE = os.path.dirname(os.path.abspath(__file__))
NEW_ROOT = os.path.dirname(HERE)
BENCHES = ("append", "push", "import")
SIZES = {
    "append": {"BENCH_SINGLE": "400", "BENCH_BATCH": "2000", "BENCH_BATCHES": "5"},
    "push": {"BENCH_SIZES": "100,5000", "BENCH_FULL": "5000", "BENCH_RUNS": "1"},
    "import": {"BENCH_MESSAGES": "10000"},
}


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", NEW_ROOT, *args], check=True, capture_output=True, text=True).stdout.strip()


def prepare_old(rev: str, base: str | None) -> tuple[str, str]:
    """The old tree and its venv's Python, made once per revision and reused."""
    sha = git("rev-parse", "--verify", rev + "^{commit}")
    root = os.path.join(base or tempfile.gettempdir(), f"sessiond-bench-{sha[:12]}")
    python = os.path.join(root, ".venv", "bin", "python")
    stamp = os.path.join(root, ".venv", ".bench-installed")
    if os.path.exists(stamp):
        return root, python
    remove(root)
    os.makedirs(root)
    archive = subprocess.Popen(["git", "-C", NEW_ROOT, "archive", sha], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", root], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise SystemExit(f"git archive {sha} failed")
    print(f"compare: installing {sha[:12]} into {root}/.venv", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", os.path.join(root, ".venv")], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", "-e", root], check=True)
    open(stamp, "w").close()
    return root, python


def new_python() -> str:
    venv = os.path.join(NEW_ROOT, ".venv", "bin", "python")
    return venv if os.path.exists(venv) else sys.executable


def run_one(root: str, python: str, bench: str, timeout: float) -> dict:
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in SIZES[bench].items()}}
    env.pop("PYTHONPATH", None)  # each side imports its own tree only (its venv's editable install)
    load_before = os.getloadavg()
    t = time.perf_counter()
    try:
        proc = subprocess.run(
            [python, os.path.join(root, "bench", bench + ".py")],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        ok = proc.returncode == 0
        out: dict = {"result": json.loads(proc.stdout)} if ok else {"error": proc.stderr[-2000:]}
    except (subprocess.TimeoutExpired, ValueError) as exc:
        out = {"error": f"{type(exc).__name__}: {exc}"}
    out["wall_seconds"] = round(time.perf_counter() - t, 2)
    out["loadavg_before"] = [round(x, 2) for x in load_before]
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def leaves(obj, prefix: str = "") -> dict[str, float]:
    """Numeric leaves by dotted path, without the scripts' targets and per-run lists."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("targets", "runs"):
                continue
            out.update(leaves(v, f"{prefix}{k}."))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix[:-1]] = float(obj)
    return out


def direction(path: str) -> str | None:
    """Which way is good for a measure, by its name; None for counts that only describe the run."""
    name = path.rsplit(".", 1)[-1]
    if name.startswith("raw_") or "raw_rate_by_call" in path:
        return "control"  # the machine's raw crypto or SQLite speed beside sessiond's, not sessiond's code
    if "per_second" in name or "per_s" in name or "fraction" in name:
        return "higher"
    if name.endswith(("_ms", "_seconds", "seconds_median", "seconds_max", "over_raw")) or name == "seconds":
        return "lower"
    if "bytes" in name:
        return "lower"
    return None


def summarize(runs: dict[str, dict[str, list[dict]]]) -> dict:
    out: dict = {}
    for bench in BENCHES:
        sides = {side: [leaves(r["result"]) for r in runs[side][bench] if "result" in r] for side in ("old", "new")}
        if not sides["old"] or not sides["new"]:
            out[bench] = {"error": "a side has no successful run"}
            continue
        paths = [p for p in sides["new"][0] if all(p in x for s in sides.values() for x in s)]
        rows = {}
        for p in paths:
            old = [x[p] for x in sides["old"]]
            new = [x[p] for x in sides["new"]]
            mo, mn = statistics.median(old), statistics.median(new)
            row = {
                "old_median": mo,
                "new_median": mn,
                "old_range": [min(old), max(old)],
                "new_range": [min(new), max(new)],
                "new_over_old": round(mn / mo, 3) if mo else None,
                "better": direction(p),
                "within_noise": max(min(old), min(new)) <= min(max(old), max(new)),
            }
            rows[p] = row
        out[bench] = rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", default="e5884fe", help="the old revision (default e5884fe)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every benchmark on both sides (3)")
    ap.add_argument("--dir", help="where the old tree and its venv go (default: the temporary folder)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds allowed to one benchmark run")
    ap.add_argument("--out", help="also write the JSON to this file")
    args = ap.parse_args()

    old_root, old_py = prepare_old(args.old, args.dir)
    sides = {"old": (old_root, old_py), "new": (NEW_ROOT, new_python())}
    started = datetime.datetime.now(datetime.UTC)
    load_start = os.getloadavg()
    runs: dict[str, dict[str, list[dict]]] = {s: {b: [] for b in BENCHES} for s in sides}
    for r in range(args.rounds):
        for bench in BENCHES:
            for side in ("old", "new") if r % 2 == 0 else ("new", "old"):
                root, py = sides[side]
                print(f"compare: round {r + 1}/{args.rounds} {bench} {side}", file=sys.stderr)
                runs[side][bench].append(run_one(root, py, bench, args.timeout))
    status = git("status", "--porcelain", "--untracked-files=no")
    report = {
        "date": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        },
        "old": {"revision": git("rev-parse", args.old + "^{commit}"), "root": old_root},
        "new": {"revision": git("rev-parse", "HEAD") + (" (with uncommitted changes)" if status else "")},
        "rounds": args.rounds,
        "sizes": {b: {k: os.environ.get(k, v) for k, v in SIZES[b].items()} for b in BENCHES},
        "summary": summarize(runs),
        "runs": runs,
    }
    text = json.dumps(report, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
