"""Shared helpers for the benchmarks: a real daemon in a temporary home."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile


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
