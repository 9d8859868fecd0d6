"""Load: many sessions written by concurrent clients on daemon A while daemon B follows them all through
a shared store. Checks that nothing fails, that both sides end identical, and reports throughput and
both daemons' memory (RSS). Prints JSON.

Full size (issue 6): 1,000 sessions x 100 messages from 16 clients: `python bench/load.py`.
LOAD_SESSIONS, LOAD_MESSAGES, LOAD_CLIENTS make it smaller (the test suite runs a small one).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from _util import Daemon

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
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)


def run(sessions: int = 1000, messages: int = 100, clients: int = 16, timeout: float = 600) -> dict:
    folder = tempfile.mkdtemp(prefix="sd-load-")
    try:
        return _run(f"file://{folder}/store", sessions, messages, clients, timeout)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(store: str, sessions: int, messages: int, clients: int, timeout: float) -> dict:
    out: dict = {"sessions": sessions, "messages_per_session": messages, "clients": clients}
    with Daemon(store) as a, Daemon(store) as b:
        errors: list[str] = []
        made: list[str] = []
        lock = threading.Lock()
        peak = {"a": 0.0, "b": 0.0}
        peak_anon = {"a": 0.0, "b": 0.0}
        done = threading.Event()

        def sampler() -> None:
            while not done.is_set():
                for name, d in (("a", a), ("b", b)):
                    peak[name] = max(peak[name], rss_mb(d.proc.pid))
                    peak_anon[name] = max(peak_anon[name], rss_mb(d.proc.pid, "RssAnon"))
                time.sleep(0.2)

        def client(k: int) -> None:
            ca, cb = Client(a.home), Client(b.home)
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
            except Exception as exc:  # every error is a finding
                errors.append(f"client {k}, {step}: {exc}")
            finally:
                ca.close()
                cb.close()

        threading.Thread(target=sampler, daemon=True).start()
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout)
        write_s = time.perf_counter() - t0
        ca, cb = Client(a.home), Client(b.home)
        deadline = time.monotonic() + timeout
        while True:
            ca.sync(wait=True, timeout=60)
            ta, tb = ca.status()["counts"], cb.status()["counts"]
            if ta["messages"] == tb["messages"] == sessions * messages or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        converge_s = time.perf_counter() - t0 - write_s
        identical = True
        for sid in made[:: max(1, len(made) // 50)]:  # compare a spread of sessions message by message
            ma = [m["id"] for m in ca.messages(sid, limit=messages + 10)["messages"]]
            mb = [m["id"] for m in cb.messages(sid, limit=messages + 10)["messages"]]
            identical &= ma == mb and len(ma) == messages
        done.set()
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
                "rss_mb_peak": peak,
                "rss_mb_end": {"a": rss_mb(a.proc.pid), "b": rss_mb(b.proc.pid)},
                "rss_anon_mb_peak": peak_anon,
                "cpu_seconds": {"a": cpu_s(a.proc.pid), "b": cpu_s(b.proc.pid)},
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
            ),
            indent=2,
        )
    )
