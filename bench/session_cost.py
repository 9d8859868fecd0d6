"""The cost of a shared session, apart from its appends: N sessions, each created on daemon A, shared
read-write, imported by daemon B through the same folder store, and given a few appends, from concurrent
clients. Prints JSON.

    python bench/session_cost.py            # COST_SESSIONS=200 COST_MESSAGES=2 COST_CLIENTS=16

What it reports, per session (bench/results/profile-load.md, seventh pass: this is the part of
bench/load.py's CPU that does not shrink with more messages a session):

* `cpu_ms_per_session`: each daemon's user and system CPU (/proc/PID/stat) from before the first create
  until both are idle again (B holds every message, A has nothing left to push, and neither used CPU
  for `COST_SETTLE` seconds), divided by N. CPU time, not wall time: the machine may be shared.
  The idle daemons' own CPU over the same span (timers, the follower's polls) is measured first and
  given as `idle_cpu_ms_per_second`; it is not subtracted.
* `thread_cpu_ms_per_session`: the same CPU by kind of thread (the event loop, the folder store's
  writer and reader, the default executor's workers "asyncio", SQLite's threads).
* `fs_per_session`: the file-system calls each daemon made from Python (bench/_fscount.py: files
  opened with O_CREAT, fsyncs of files and folders, renames, unlinks, mkdirs; SQLite's own are not
  counted), and `files_per_session`: how many more files each home and the store hold afterwards.
* `files_floor`: the floor of those calls, per daemon: the same numbers of files created, fsyncs,
  renames and new folders made by this process alone in the store's folder (files_floor()), its CPU
  and wall time per session.

COST_PROFILE=FOLDER samples both daemons with py-spy meanwhile (see profile()); bench/_fscount.py's
FSCOUNT_* variables count calls of named functions or profile the event loop.

COST_MESSAGES appends are made to each session right after B's import (so each session is pushed at
least twice: the share's push and the appends'). Both daemons run this tree's code, or whatever
`sessiond` PYTHONPATH gives them (a `git archive` of another revision under a `sessiond/` folder).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from _util import Daemon, cpu_split, remove

from sessiond.client import Client

HERE = os.path.dirname(os.path.abspath(__file__))


def files_floor(folder: str, per_session: dict[str, float], sessions: int) -> dict[str, float]:
    """The floor of a daemon's durable files, per session: as many files created (512 bytes written to
    each), fsyncs, renames and new folders as it made (`per_session`, from fs_per_session) times
    `sessions`, made in one thread of this process under `folder` (on the store's file system), with no
    sessiond code: each file written and fsynced, renamed while renames last; the fsyncs left over are
    of the folders. This process's CPU (user + system) and wall time, in ms per session."""
    total = {k: round(per_session.get(k, 0.0) * sessions) for k in ("creates", "fsyncs", "renames", "mkdirs")}
    os.makedirs(folder)
    dirs = [folder] + [os.path.join(folder, f"d{i}") for i in range(total["mkdirs"])]
    data = os.urandom(512)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for d in dirs[1:]:
        os.mkdir(d, 0o700)
    fsyncs, renames = total["fsyncs"], total["renames"]
    for i in range(total["creates"]):
        d = dirs[i % len(dirs)]
        tmp = os.path.join(d, f".tmp-{i}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            if fsyncs:
                os.fsync(fd)
                fsyncs -= 1
        finally:
            os.close(fd)
        if renames:
            os.rename(tmp, os.path.join(d, f"f{i}"))
            renames -= 1
    for i in range(fsyncs):  # the folders' fsyncs
        fd = os.open(dirs[i % len(dirs)], os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    per = 1000 / sessions
    return {
        "cpu_ms_per_session": round(per * ((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)), 2),
        "wall_ms_per_session": round(per * wall, 2),
    }


class CountedDaemon(Daemon):
    """A daemon whose Python file-system calls are counted (bench/_fscount.py)."""

    def program(self) -> list[str]:
        self.counts_path = os.path.join(self.dir, "fscounts.json")
        return [sys.executable, os.path.join(HERE, "_fscount.py"), self.counts_path]

    def fs_counts(self) -> dict[str, int]:
        try:
            before = os.stat(self.counts_path).st_mtime_ns
        except FileNotFoundError:
            before = 0
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if os.stat(self.counts_path).st_mtime_ns != before:
                    with open(self.counts_path) as f:
                        return json.load(f)
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.01)
        raise RuntimeError("the daemon did not write its file-system counts")


def thread_cpu(pid: int, threads: dict[str, int]) -> dict[str, float]:
    """User + system CPU so far of each kind of thread of the daemon (the event loop, the store's writer,
    the default executor's workers, SQLite's threads...), by the names bench/_fscount.py reports, numbers
    taken off ("asyncio_3" -> "asyncio")."""
    out: dict[str, float] = {}
    for name, tid in threads.items():
        try:
            u, s = cpu_split(pid, tid)
        except (FileNotFoundError, ProcessLookupError):
            continue
        kind = name.rstrip("0123456789").rstrip("_") or name
        out[kind] = out.get(kind, 0.0) + u + s
    return out


def count_files(path: str) -> int:
    n = 0
    for _, _, files in os.walk(path):
        n += len(files)
    return n


def settle(ds: dict, quiet_s: float, timeout: float = 60) -> None:
    """Wait until no daemon used CPU for `quiet_s` seconds (at the clock tick's resolution)."""
    deadline = time.monotonic() + timeout
    last = {k: cpu_split(d.proc.pid) for k, d in ds.items()}
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = {k: cpu_split(d.proc.pid) for k, d in ds.items()}
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return


def profile(ds: dict, folder: str | None) -> list:
    """With COST_PROFILE=FOLDER: py-spy (if installed) samples each daemon, all its threads, while it is
    measured, into FOLDER/a.txt and FOLDER/b.txt (py-spy's raw format: collapsed stacks and counts)."""
    if not folder:
        return []
    import shutil
    import subprocess

    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    os.makedirs(folder, exist_ok=True)
    rate = os.environ.get("COST_PROFILE_RATE", "250")
    spies = []
    for k, d in ds.items():
        cmd = [spy, "record", "--pid", str(d.proc.pid), "--rate", rate, "--format", "raw", "--threads"]
        cmd += ["--nonblocking", "--output", os.path.join(folder, f"{k}.txt")]
        if os.environ.get("COST_PROFILE_NATIVE"):
            cmd.append("--native")
        spies.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1)  # py-spy attached
    return spies


def run(sessions: int = 200, messages: int = 2, clients: int = 16, settle_s: float = 1.0) -> dict:
    folder = tempfile.mkdtemp(prefix="sd-cost-")
    try:
        return _run(os.path.join(folder, "store"), sessions, messages, clients, settle_s)
    finally:
        remove(folder)


def _run(store_dir: str, sessions: int, messages: int, clients: int, settle_s: float) -> dict:
    out: dict = {"sessions": sessions, "messages_per_session": messages, "clients": clients}
    with CountedDaemon(f"file://{store_dir}") as a, CountedDaemon(f"file://{store_dir}") as b:
        ds = {"a": a, "b": b}
        settle(ds, settle_s)
        idle0, t_idle = {k: cpu_split(d.proc.pid) for k, d in ds.items()}, time.perf_counter()
        time.sleep(2)
        idle1, idle_s = {k: cpu_split(d.proc.pid) for k, d in ds.items()}, time.perf_counter() - t_idle
        files0 = {"a": count_files(a.home), "b": count_files(b.home), "store": count_files(store_dir)}
        fs0 = {k: d.fs_counts() for k, d in ds.items()}
        thr0 = {k: thread_cpu(d.proc.pid, fs0[k]["threads"]) for k, d in ds.items()}
        spies = profile(ds, os.environ.get("COST_PROFILE"))
        cpu0 = {k: cpu_split(d.proc.pid) for k, d in ds.items()}
        t0 = time.perf_counter()
        errors: list[str] = []

        def client(k: int) -> None:
            ca, cb = Client(a.home), Client(b.home)
            step = "start"
            try:
                for n in range(k, sessions, clients):
                    step = f"create {n}"
                    sid = ca.create_session(name=f"cost {n}")["id"]
                    step = f"share {sid}"
                    code = ca.share(sid, write=True)["code"]
                    step = f"import {sid}"
                    cb.import_code(code)
                    for i in range(messages):
                        step = f"append {i} to {sid}"
                        ca.append(sid, "user" if i % 2 == 0 else "assistant", f"session {n} message {i}")
            except Exception as exc:  # every error is a finding
                errors.append(f"client {k}, {step}: {exc}")
            finally:
                ca.close()
                cb.close()

        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        write_s = time.perf_counter() - t0
        with Client(a.home) as ca, Client(b.home) as cb:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                pending = sum(st["pending"] for st in ca.status()["sync"].values())
                if not pending and cb.status()["counts"]["messages"] >= sessions * messages:
                    break
                time.sleep(0.05)
            caught_up_s = time.perf_counter() - t0
            settle(ds, settle_s)
            cpu1 = {k: cpu_split(d.proc.pid) for k, d in ds.items()}
            total_s = time.perf_counter() - t0
            fs1 = {k: d.fs_counts() for k, d in ds.items()}
            thr1 = {k: thread_cpu(d.proc.pid, fs1[k]["threads"]) for k, d in ds.items()}
            for spy in spies:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=60)
            on_b = cb.status()["counts"]["messages"]
        files1 = {"a": count_files(a.home), "b": count_files(b.home), "store": count_files(store_dir)}
        per = 1000 / sessions
        out.update(
            {
                "errors": errors[:20],
                "error_count": len(errors),
                "messages_on_b": on_b,
                "complete": on_b == sessions * messages,
                "write_seconds": round(write_s, 2),
                "caught_up_seconds": round(caught_up_s, 2),
                "measured_seconds": round(total_s, 2),
                "cpu_ms_per_session": {
                    k: {
                        "user": round(per * (cpu1[k][0] - cpu0[k][0]), 2),
                        "system": round(per * (cpu1[k][1] - cpu0[k][1]), 2),
                        "total": round(per * (sum(cpu1[k]) - sum(cpu0[k])), 2),
                    }
                    for k in ds
                },
                "thread_cpu_ms_per_session": {
                    k: {t: round(per * (v - thr0[k].get(t, 0.0)), 2) for t, v in sorted(thr1[k].items())} for k in ds
                },
                "idle_cpu_ms_per_second": {k: round(1000 * (sum(idle1[k]) - sum(idle0[k])) / idle_s, 2) for k in ds},
                "fs_per_session": {
                    k: {c: round((v - fs0[k][c]) / sessions, 2) for c, v in fs1[k].items() if isinstance(v, int)}
                    for k in ds
                },
                "files_per_session": {k: round((files1[k] - files0[k]) / sessions, 2) for k in files0},
            }
        )
        # the floor: the same counts of files, fsyncs and renames alone, in the store's folder (files_floor)
        out["files_floor"] = {
            k: files_floor(os.path.join(store_dir, f"floor-{k}"), out["fs_per_session"][k], sessions) for k in ds
        }
        if os.environ.get("FSCOUNT_TRAIL"):  # every call each daemon made meanwhile (for a small run)
            out["trail"] = {k: fs1[k]["trail"][len(fs0[k]["trail"]) :] for k in ds}
    return out


if __name__ == "__main__":
    print(
        json.dumps(
            run(
                int(os.environ.get("COST_SESSIONS", 200)),
                int(os.environ.get("COST_MESSAGES", 2)),
                int(os.environ.get("COST_CLIENTS", 16)),
                float(os.environ.get("COST_SETTLE", 1.0)),
            ),
            indent=2,
        )
    )
