"""bench/load.py's workload counted, not timed: daemon A written by concurrent clients with sync on, daemon B
following every session through a shared folder store, both daemons' work counted as bench/workcount.py counts
one (Python calls by function, SQLite statements by text, SQLite VM steps by statement), during the writes.
Prints JSON.

`python bench/workcount_load.py` runs load.py's own clients (`load.clients_of`: each session created on A,
shared, imported on B, then written) against two daemons started as load.py starts them (`_util.Daemon`, the
default config, one `file://` store), each under this file's `daemon` mode: the daemon's CLI run in-process with
workcount's counters, switched on and off through files in a control folder (on when the writes start, off when
they end; each daemon then writes its counts there). LOAD_SESSIONS (64) x LOAD_MESSAGES (100) from
LOAD_CLIENTS (16); WORKCOUNT_PY=0 leaves the Python calls out, WORKCOUNT_OUT=PREFIX also writes PREFIX-a.json
and PREFIX-b.json (the per-daemon parts, in bench/workcount.py's format, for its `diff`).

With 16 clients the group commit's batches, the pushes per append and the pulls per append move with timing
(a push carries whatever the session gained since the last), so each daemon's totals are given per append AND
per unit of its sync work: A's per push (calls of the pusher's `push`), B's per pull (calls of the follower's
`pull`), besides `pushes`/`pulls` per append; the statements and VM steps move much less than the Python calls.
Repeat a run to see its spread before reading a difference. Another tree: its `git archive` unpacked under
DIR/sessiond and PYTHONPATH=DIR, as for bench/workcount.py.

`python bench/workcount_load.py diff OLD.json NEW.json a|b [KEY] [MIN] [per]` prints what changed on one daemon,
KEY as for workcount.py's diff (by_vm by default), per `append` (the default) or `unit` (per push on A, per pull
on B: each side's rows scaled by its own appends per unit, so a run that pushed more often is not charged for it).
"""

from __future__ import annotations

import collections
import dis
import json
import os
import re
import runpy
import sys
import tempfile
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workcount
from _util import Daemon, remove

SESSIONS = int(os.environ.get("LOAD_SESSIONS", 64))
MESSAGES = int(os.environ.get("LOAD_MESSAGES", 100))
CLIENTS = int(os.environ.get("LOAD_CLIENTS", 16))
PY = os.environ.get("WORKCOUNT_PY", "1") == "1"
PUSH = re.compile(r"sync/pusher\.py:\w+\.push$")  # one push of one session (Pusher.push, both trees)
PULL = re.compile(r"sync/follower\.py:\w+\.pull$")  # one pull of one session (Follower.pull, both trees)
CALLERS = re.compile(os.environ["WORKCOUNT_CALLERS"]) if os.environ.get("WORKCOUNT_CALLERS") else None


def daemon(ctl: str, argv: list[str]) -> None:
    """The `sessiond` CLI (argv) in this process with workcount's counters, on while CTL/on exists and until
    CTL/off does; then the counts, per the whole window, go to CTL/counts-<pid>.json."""
    counts = workcount.Counts()
    sqlite3 = workcount.sqlite3
    sqlite3.connect = counts.connect(sqlite3.connect)  # (before the daemon opens its database)

    def watch() -> None:
        while not os.path.exists(os.path.join(ctl, "on")):
            time.sleep(0.02)
        counts.on = True
        while not os.path.exists(os.path.join(ctl, "off")):
            time.sleep(0.02)
        counts.on = False
        out = _totals(counts)
        tmp = os.path.join(ctl, f".counts-{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump(out, f)
        os.rename(tmp, os.path.join(ctl, f"counts-{os.getpid()}.json"))

    threading.Thread(target=watch, daemon=True).start()  # (started before the profile: not counted)
    if PY:
        threading.setprofile(_entries(counts))
        sys.setprofile(_entries(counts))
    sys.argv = ["sessiond", *argv]
    try:
        runpy.run_module("sessiond.cli.main", run_name="__main__")
    finally:
        sys.setprofile(None)
        threading.setprofile(None)


def _entries(counts: workcount.Counts) -> Any:
    """counts.profile, and beside it the entries (not the resumptions: the profile's "call" event comes at every
    resumption of a coroutine too) into the pusher's push and the follower's pull, in counts.units."""
    entry: dict = {}  # code -> offset of its first RESUME (its entry), for the functions watched; None for others

    def watch(code: Any) -> int | None:
        name = _name(code)
        if PUSH.search(name) or PULL.search(name) or (CALLERS is not None and CALLERS.search(name)):
            return next(i.offset for i in dis.get_instructions(code) if i.opname == "RESUME")
        return None

    def profile(frame: Any, event: str, arg: Any) -> None:
        counts.profile(frame, event, arg)
        if counts.on and event == "call":
            code = frame.f_code
            at = entry[code] if code in entry else entry.setdefault(code, watch(code))
            if at is None or frame.f_lasti != at:
                return
            name = _name(code)
            if PUSH.search(name) or PULL.search(name):
                units[code.co_qualname.rsplit(".", 1)[-1]] += 1
            if CALLERS is not None and CALLERS.search(name):
                back = frame.f_back
                callers[f"{_name(back.f_code) if back is not None else None} -> {name}"] += 1

    units = counts.units = collections.Counter()  # type: ignore[attr-defined]
    callers = counts.callers = collections.Counter()  # type: ignore[attr-defined]
    return profile


def _name(code: Any) -> str:
    return f"{workcount._where(code.co_filename)}:{code.co_qualname}"


def _totals(counts: workcount.Counts) -> dict:
    """The raw counts of the window, by function and statement (divided later, when the appends are known)."""

    def by(counter: Any, key: Any) -> dict:
        out: dict = {}
        for k, n in counter.items():
            if getattr(k, "co_filename", None) == workcount.__file__:
                continue  # (workcount's own trace and progress callbacks)
            out[key(k)] = out.get(key(k), 0) + n
        return out

    return {
        "by_function": by(counts.calls, _name),
        "by_loop": by(counts.loop_calls, _name),
        "by_sql": by(counts.sql, workcount._statement),
        "by_vm": {k: 10 * n for k, n in by(counts.vm, workcount._statement).items()},
        "units": dict(getattr(counts, "units", {})),
        "callers": dict(getattr(counts, "callers", {})),
    }


def _side(raw: dict, appends: int, unit: str, units: int | None) -> dict:
    """One daemon's counts in workcount.py's format (per append), with its totals per push or pull."""

    def per(d: dict, top: int = 300) -> dict:
        return {k: round(v / appends, 3) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]}

    total = {
        "py_calls": sum(raw["by_function"].values()),
        "loop_calls": sum(raw["by_loop"].values()),
        "sql": sum(raw["by_sql"].values()),
        "vm_steps": sum(raw["by_vm"].values()),
    }
    out: dict = {k: round(v / appends, 2) for k, v in total.items()}
    out |= {"appends": appends, unit + "es" if unit == "push" else unit + "s": units}
    if units:
        out[f"per_{unit}"] = {k: round(v / units, 1) for k, v in total.items()}
        out[f"appends_per_{unit}"] = round(appends / units, 2)
    out |= {k: per(raw[k]) for k in ("by_function", "by_loop", "by_sql", "by_vm")}
    if raw.get("callers"):
        out["by_caller"] = per(raw["callers"])
    return out


def measure() -> dict:
    import load

    from sessiond.client import Client

    ctl = tempfile.mkdtemp(prefix="sd-workcount-ctl-")
    folder = tempfile.mkdtemp(prefix="sd-workcount-load-")
    here = os.path.abspath(__file__)
    program = Daemon.program
    Daemon.program = lambda self: [sys.executable, here, "daemon", ctl]  # type: ignore[method-assign]
    try:
        with Daemon(f"file://{folder}/store") as a, Daemon(f"file://{folder}/store") as b:
            with Client(a.home) as c:
                started0 = c.status().get("pushes", {}).get("started", 0)
            open(os.path.join(ctl, "on"), "w").close()
            t0 = time.perf_counter()
            errors, made, _, _ = load.clients_of(a.home, b.home, list(range(CLIENTS)), SESSIONS, MESSAGES, CLIENTS)
            write_s = time.perf_counter() - t0
            open(os.path.join(ctl, "off"), "w").close()
            raw = {}
            deadline = time.monotonic() + 120
            for who, d in (("a", a), ("b", b)):
                path = os.path.join(ctl, f"counts-{d.proc.pid}.json")
                while not os.path.exists(path):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"daemon {who} wrote no counts")
                    time.sleep(0.05)
                with open(path) as f:
                    raw[who] = json.load(f)
            with Client(a.home) as c:
                started = c.status().get("pushes", {}).get("started", 0) - started0
    finally:
        Daemon.program = program  # type: ignore[method-assign]
        remove(ctl)
        remove(folder)
    appends = SESSIONS * MESSAGES
    pushes = raw["a"]["units"].get("push") if PY else started
    pulls = raw["b"]["units"].get("pull")
    return {
        "tree": os.path.dirname(os.path.dirname(sys.modules["sessiond.client"].__file__ or "")),
        "sessions": SESSIONS,
        "messages_per_session": MESSAGES,
        "clients": CLIENTS,
        "appends": appends,
        "errors": errors[:5],
        "sessions_made": len(made),
        "write_seconds": round(write_s, 2),
        "pushes_started": started,  # A's status, during the writes (a check on `pushes`)
        "a": _side(raw["a"], appends, "push", pushes),
        "b": _side(raw["b"], appends, "pull", pulls),
    }


def diff(old_path: str, new_path: str, side: str, key: str = "by_vm", least: float = 0.05, per: str = "append") -> None:
    """workcount.py's diff of one daemon's counts, per append or per unit (push on A, pull on B)."""
    sides = []
    for path in (old_path, new_path):
        with open(path) as f:
            s = json.load(f)[side]
        if per == "unit":
            unit = "push" if side == "a" else "pull"
            scale = s[f"appends_per_{unit}"]
            s = {
                k: ({kk: vv * scale for kk, vv in v.items()} if k.startswith("by_") else v * scale)
                for k, v in s.items()
                if k.startswith("by_") or k in ("py_calls", "loop_calls", "sql", "vm_steps")
            }
        sides.append(s)
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for n, s in enumerate(sides):
            paths.append(os.path.join(d, f"{n}.json"))
            with open(paths[-1], "w") as f:
                json.dump(s, f)
        workcount.diff(paths[0], paths[1], key, least)


if __name__ == "__main__":
    if sys.argv[1:2] == ["daemon"]:
        daemon(sys.argv[2], sys.argv[3:])
    elif sys.argv[1:2] == ["diff"]:
        a = sys.argv[2:]
        diff(a[0], a[1], a[2], *a[3:4], *[float(x) for x in a[4:5]], *a[5:6])
    else:
        result = measure()
        prefix = os.environ.get("WORKCOUNT_OUT")
        if prefix:
            for who in ("a", "b"):
                with open(f"{prefix}-{who}.json", "w") as f:
                    json.dump(result[who], f, indent=1)
        print(json.dumps(result, indent=1))
