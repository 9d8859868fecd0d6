"""Shared helpers for the benchmarks: a real daemon in a temporary home."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any


class Daemon:
    def __init__(self, store: str | None = None, home: str | None = None):
        self.dir = tempfile.mkdtemp(prefix="sd-bench-")
        self.home = home or os.path.join(self.dir, "home")
        self.store = store
        self.proc = None

    def program(self) -> list[str]:
        """How the daemon is started (what comes before `daemon --home ...`)."""
        return [sys.executable, "-m", "sessiond.cli.main"]

    def __enter__(self) -> Daemon:
        r, w = os.pipe()
        cmd = [*self.program(), "daemon", "--home", self.home, "--ready-fd", str(w)]
        if self.store:
            cmd += ["--store", self.store]
        # The daemon's log goes to a file: a pipe nobody reads fills up and stalls the daemon.
        self.log_path = os.path.join(self.dir, "daemon.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=self._log)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            if f.read(6) != b"ready\n":
                self.proc.wait(timeout=30)
                raise RuntimeError(self.log_tail())
        return self

    def log_tail(self, n: int = 4000) -> str:
        with open(self.log_path, "rb") as f:
            return f.read()[-n:].decode(errors="replace")

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        self._log.close()
        if os.environ.get("BENCH_KEEP"):
            print(f"kept {self.dir}", file=sys.stderr)
        else:
            remove(self.dir)


def remove(path: str) -> None:
    """Remove a benchmark's folder, or with BENCH_TRASH set (bench/repeat.py sets it), move it there for
    the caller to remove once all its runs are done: on a file system without a journal (ext4's
    recently_deleted), the inodes freed by deleting one run's files make every file the next run creates
    dearer for minutes (bench/results/profile-load.md, eighth pass), and runs back to back would pay for
    the run before them."""
    trash = os.environ.get("BENCH_TRASH")
    if trash:
        try:
            os.rename(path, os.path.join(trash, f"{os.path.basename(path)}-{os.getpid()}-{os.urandom(4).hex()}"))
            return
        except OSError:  # another file system: removed now
            pass
    shutil.rmtree(path, ignore_errors=True)


def cpu_split(pid: int, tid: int | None = None) -> tuple[float, float]:
    """User and system CPU time the process (or its thread `tid`) has used so far, in seconds."""
    with open(f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def daemon_on(config: str, code: str | None = None) -> Daemon:
    """A daemon started in a new home whose config.toml is `config`, on this checkout's code or, with `code`,
    on the `sessiond` in that folder (another version's: e.g. `git archive main` unpacked into code/sessiond)."""
    home = os.path.join(tempfile.mkdtemp(prefix="sd-bench-"), "home")
    os.makedirs(home, mode=0o700)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write(config)
    saved = os.environ.get("PYTHONPATH")
    if code is not None:
        os.environ["PYTHONPATH"] = code
    try:
        return Daemon(home=home).__enter__()
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def alternated(
    cases: dict, base: str | None, rounds: int, one: Callable[[Any, str | None], float], appends: int
) -> dict:
    """Each case measured `rounds` times by `one(case's spec, code)` (daemon CPU per append, us, over `appends`)
    on this checkout's code and, with `base`, on that folder's, alternated round by round (so that both meet the
    same moments of a shared VM): per code and case, the best and median and every run, for the JSON printed."""
    import platform
    import statistics
    import time

    codes = {"this": None, **({"base": base} if base else {})}
    runs: dict[str, dict[str, list[float]]] = {name: {k: [] for k in cases} for name in codes}
    for _ in range(rounds):
        for case, spec in cases.items():
            for name, code in codes.items():
                runs[name][case].append(one(spec, code))
    return {
        "appends_per_round": appends,
        "rounds": rounds,
        "unit": "daemon CPU (user + system) per append, us, over the append stream",
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    } | {
        name: {
            case: {"best_us": round(min(v)), "median_us": round(statistics.median(v)), "runs_us": [round(x) for x in v]}
            for case, v in runs[name].items()
        }
        for name in codes
    }


def cpu_per_append(d: Daemon, c: Any, sid: str, appends: int, **extra: Any) -> float:
    """The daemon's CPU (us) per append of `appends` short messages to `sid` through client `c` (closed after)."""
    cpu0 = cpu_split(d.proc.pid)
    for i in range(appends):
        c.append(sid, "user", f"message {i} with a little text in it", **extra)
    cpu1 = cpu_split(d.proc.pid)
    c.close()
    return (sum(cpu1) - sum(cpu0)) / appends * 1e6
