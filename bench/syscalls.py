"""The system calls an append costs daemon A, by thread: `perf trace -s` (the kernel's syscall tracepoints,
counted per thread) attached to the daemon while appends run, each count divided by the appends. Prints JSON.

SYSCALLS_MODE `loopcpu` (the default): bench/loopcpu.py's set-up (the daemon on this process's main thread,
sync idle, BENCH_CLIENTS on the append stream from a child process), traced for one round of BENCH_APPENDS.
`load`: bench/load.py's (daemon A and B over a folder store, sync on, LOAD_SESSIONS x LOAD_MESSAGES from
LOAD_CLIENTS threads of this process; each session's create, share and B's import included, as there), A
traced from before the first client to after the last, after a warm-up of WARM_SESSIONS sessions untraced.

The threads are told apart by name: every thread of the traced daemon names itself (its Python name, less
"sessiond-", 15 bytes at most: the kernel's comm) when it starts, by a sitecustomize.py this bench puts first
on the daemon's PYTHONPATH; the loop's thread is `loop`. PYTHONPATH given to this bench is kept after it (the
code measured: `git archive` of another commit unpacked there). Needs perf (`perf trace`) and root.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from _util import cpu_split

NAMING = r"""
import threading

def _name(name):
    try:
        with open("/proc/thread-self/comm", "w") as f:
            f.write(name.replace("sessiond-", "")[:15])
    except OSError:
        pass

_run = threading.Thread._bootstrap_inner

def _bootstrap_inner(self):
    _name(self.name)
    _run(self)

threading.Thread._bootstrap_inner = _bootstrap_inner
if threading.current_thread() is threading.main_thread():
    _name("loop")
"""

_HEAD = re.compile(r"^\s*(\S.*?) \((\d+)\), (\d+) events")
_ROW = re.compile(r"^\s+([a-z_0-9]+)\s+(\d+)\s+(\d+)\s")


def naming_path() -> str:
    """A folder holding the sitecustomize.py that names each thread, for PYTHONPATH."""
    folder = tempfile.mkdtemp(prefix="sd-syscalls-names-")
    with open(os.path.join(folder, "sitecustomize.py"), "w") as f:
        f.write(NAMING)
    return folder


class Trace:
    """`perf trace -s -p PID` from entering to leaving (its summary read at the end)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.out = tempfile.NamedTemporaryFile(prefix="sd-syscalls-", suffix=".txt", delete=False)

    def __enter__(self) -> Trace:
        self.proc = subprocess.Popen(
            ["perf", "trace", "-s", "-m", "1024", "-p", str(self.pid), "-o", self.out.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # (perf's attach: a few hundred ms)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)

    def counts(self) -> dict[str, collections.Counter[str]]:
        """Syscall counts by thread name (threads of one name summed; the thread's id dropped)."""
        by: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        name = None
        with open(self.out.name) as f:
            for line in f:
                m = _HEAD.match(line)
                if m:
                    name = re.sub(r"_\d+$", "_N", m.group(1))
                    continue
                m = _ROW.match(line)
                if m and name is not None:
                    by[name][m.group(1)] += int(m.group(2))
        if os.environ.get("SYSCALLS_KEEP"):
            print(f"perf trace's summary kept in {self.out.name}", file=sys.stderr)
        else:
            os.unlink(self.out.name)
        return by


WARM_SESSIONS = 48


def threads(pid: int) -> set[str]:
    return set(os.listdir(f"/proc/{pid}/task"))


def thread_name(pid: int, tid: str) -> str:
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "(gone)"


def untraced(split0: tuple[float, float], split1: tuple[float, float], appends: int) -> dict:
    """The loop thread's user and system CPU per append (us) over a part not traced (/proc's clock ticks)."""
    return {
        "loop_user_us_per_append": round((split1[0] - split0[0]) / appends * 1e6, 1),
        "loop_system_us_per_append": round((split1[1] - split0[1]) / appends * 1e6, 1),
    }


def table(by: dict[str, collections.Counter[str]], appends: int) -> dict:
    """Per thread: each syscall's count per append (largest first), and the thread's total per append."""
    out = {}
    for name, c in sorted(by.items(), key=lambda kv: -sum(kv[1].values())):
        total = sum(c.values())
        if total / appends < 0.005:
            continue
        out[name] = {"total_per_append": round(total / appends, 3)} | {
            k: round(v / appends, 3) for k, v in c.most_common() if v / appends >= 0.005
        }
    return out


def loopcpu_mode() -> dict:
    import loopcpu

    from sessiond.daemon import server

    exec(NAMING, {})  # (this process is the daemon: its threads named from here on, this one `loop`)
    home = loopcpu.new_home("sd-syscalls-")
    result: dict = {}

    def drive() -> None:
        try:
            with open("/proc/thread-self/comm", "w") as f:
                f.write("bench-drive")
            child, db = loopcpu.start_clients(home, 2)
            assert child.stdin is not None and child.stdout is not None
            split0, commits0 = cpu_split(os.getpid(), os.getpid()), db.commits
            child.stdin.write("\n")  # a first round untraced: the warm-up
            child.stdin.flush()
            child.stdout.readline()
            result["untraced"] = untraced(split0, cpu_split(os.getpid(), os.getpid()), loopcpu.APPENDS)
            result["untraced"]["appends_per_commit"] = round(loopcpu.APPENDS / max(1, db.commits - commits0), 2)
            with Trace(os.getpid()) as trace:
                commits, cpu = db.commits, time.process_time()
                child.stdin.write("\n")
                child.stdin.flush()
                wall = float(child.stdout.readline())
                cpu, commits = time.process_time() - cpu, db.commits - commits
            result.update(
                appends=loopcpu.APPENDS,
                appends_per_commit=round(loopcpu.APPENDS / max(1, commits), 2),
                appends_per_second_traced=round(loopcpu.APPENDS / wall),
                process_cpu_us_per_append_traced=round(cpu / loopcpu.APPENDS * 1e6, 1),
                per_append=table(trace.counts(), loopcpu.APPENDS),
            )
            child.wait(timeout=60)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=drive, daemon=True).start()
    try:
        asyncio.run(server.serve(home, announce=False))
    finally:
        loopcpu.remove(os.path.dirname(home))
    return {"mode": "loopcpu", "clients": loopcpu.CLIENTS} | result


def load_mode() -> dict:
    import load
    from _util import Daemon, remove

    from sessiond.client import Client

    sessions = int(os.environ.get("LOAD_SESSIONS", 200))
    messages = int(os.environ.get("LOAD_MESSAGES", 100))
    clients = int(os.environ.get("LOAD_CLIENTS", 16))
    names = naming_path()
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = names + (os.pathsep + saved if saved else "")
    folder = tempfile.mkdtemp(prefix="sd-syscalls-load-")
    try:
        with Daemon(f"file://{folder}/store") as a, Daemon(f"file://{folder}/store") as b:
            # a warm-up untraced (perf follows the threads there are when it attaches, none started later): the
            # thread pools started, as in a long run
            split0 = cpu_split(a.proc.pid, a.proc.pid)
            load.clients_of(a.home, b.home, list(range(clients)), WARM_SESSIONS, messages, clients)
            warm = untraced(split0, cpu_split(a.proc.pid, a.proc.pid), WARM_SESSIONS * messages)
            with Client(a.home) as c0:
                pushes0 = c0.status().get("pushes", {}).get("started", 0)
            threads0 = threads(a.proc.pid)
            with Trace(a.proc.pid) as trace:
                cpu0 = load.cpu_split(a.proc.pid)
                t0 = time.perf_counter()
                errors, _, _, _ = load.clients_of(a.home, b.home, list(range(clients)), sessions, messages, clients)
                wall = time.perf_counter() - t0
                cpu1 = load.cpu_split(a.proc.pid)
                started = sorted(thread_name(a.proc.pid, t) for t in threads(a.proc.pid) - threads0)
            with Client(a.home) as c0:
                pushes = c0.status().get("pushes", {}).get("started", 0) - pushes0
            appends = sessions * messages
            return {
                "mode": "load",
                "sessions": sessions,
                "messages_per_session": messages,
                "clients": clients,
                "errors": errors[:5],
                "untraced": warm,  # (the warm-up's)
                "appends": appends,
                "appends_per_second_traced": round(appends / wall),
                "cpu_ms_per_append_traced": round(1000 * (sum(cpu1) - sum(cpu0)) / appends, 3),
                "pushes": pushes,
                "per_append": table(trace.counts(), appends),
                "threads_started_while_traced": started,  # (not traced)
            }
    finally:
        remove(folder)
        remove(names)


if __name__ == "__main__":
    mode = os.environ.get("SYSCALLS_MODE", "loopcpu")
    print(json.dumps(load_mode() if mode == "load" else loopcpu_mode(), indent=1))
