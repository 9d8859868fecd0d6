"""Run `python -m sessiond.cli.main ...` with the file-system calls Python makes counted (bench/session_cost.py).

    python bench/_fscount.py COUNTS_PATH daemon --home ...

Counts the calls of os.open that may create a file (O_CREAT), os.fsync / os.fdatasync, os.replace /
os.rename, os.unlink and os.mkdir made from Python (SQLite's own calls are in C and not counted). On
SIGUSR1 the counts so far are written to COUNTS_PATH (atomically: a temporary file renamed), with the
daemon's threads by name and their kernel ids (the bench reads each thread's CPU from /proc), so the
bench reads them before and after the part it measures. A wrapper adds well under a microsecond to a
call that itself costs tens of microseconds (an fsync: milliseconds), so the CPU measured is the
daemon's own.

For a profile, not for the figures (each adds its own cost):
* FSCOUNT_CALLS="module:Class.method,...": the calls of those functions counted too (async ones: each
  call, not each resumption), e.g. `sessiond.sync.follower:Follower.pull`.
* FSCOUNT_CPROFILE=PATH: the event loop's thread profiled by cProfile on its CPU time (thread_time)
  between the first SIGUSR1 and the second, written to PATH.PID.
* FSCOUNT_TRAIL=1: every counted call, with its thread and path, in the counts (a small run's trail).
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import threading

counts = {"creates": 0, "fsyncs": 0, "renames": 0, "unlinks": 0, "mkdirs": 0}
_lock = threading.Lock()
trail: list[str] | None = [] if os.environ.get("FSCOUNT_TRAIL") else None  # each call, for a small run


def _note(name: str, args: tuple) -> None:
    if trail is not None:
        trail.append(f"{threading.current_thread().name} {name} {args[0] if args else ''}")


def _count(name: str, fn):
    def wrapper(*args, **kwargs):
        with _lock:
            counts[name] += 1
            _note(name, args)
        return fn(*args, **kwargs)

    return wrapper


_open = os.open
_rename = os.rename


def _counted_open(path, flags, *args, **kwargs):
    if flags & os.O_CREAT:
        with _lock:
            counts["creates"] += 1
            _note("create", (path,))
    return _open(path, flags, *args, **kwargs)


def _dump(path: str) -> None:
    with _lock:
        out: dict = dict(counts, threads={t.name: t.native_id for t in threading.enumerate()})
        if trail is not None:
            out["trail"] = trail
        data = json.dumps(out).encode()
    tmp = path + ".tmp"
    fd = _open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    _rename(tmp, path)


_prof: list = []  # with FSCOUNT_CPROFILE=PATH: the event loop's thread profiled by its CPU time between two dumps


def _dump_and_profile(path: str) -> None:
    _dump(path)
    where = os.environ.get("FSCOUNT_CPROFILE")
    if not where:
        return
    import cProfile
    import time

    if not _prof:
        _prof.append(cProfile.Profile(time.thread_time))
        _prof[0].enable()
    else:
        _prof[0].disable()
        _prof[0].dump_stats(f"{where}.{os.getpid()}")


def count_calls(spec: str) -> None:
    """FSCOUNT_CALLS="module:Class.method,...": count the calls of each (reported under its name)."""
    import functools
    import importlib
    import inspect

    for item in filter(None, spec.split(",")):
        mod, _, qual = item.partition(":")
        owner = importlib.import_module(mod)
        *path, name = qual.split(".")
        for part in path:
            owner = getattr(owner, part)
        fn = getattr(owner, name)
        counts[qual] = 0

        def wrap(fn, qual=qual):
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def awrapper(*a, **k):
                    counts[qual] += 1
                    return await fn(*a, **k)

                return awrapper

            @functools.wraps(fn)
            def wrapper(*a, **k):
                counts[qual] += 1
                return fn(*a, **k)

            return wrapper

        setattr(owner, name, wrap(fn))


def main() -> None:
    path = sys.argv[1]
    count_calls(os.environ.get("FSCOUNT_CALLS", ""))
    os.open = _counted_open
    os.fsync = _count("fsyncs", os.fsync)
    os.fdatasync = _count("fsyncs", os.fdatasync)
    os.replace = _count("renames", os.replace)
    os.rename = _count("renames", os.rename)
    os.unlink = _count("unlinks", os.unlink)
    os.mkdir = _count("mkdirs", os.mkdir)
    signal.signal(signal.SIGUSR1, lambda *_: _dump_and_profile(path))
    sys.argv = ["sessiond"] + sys.argv[2:]
    runpy.run_module("sessiond.cli.main", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
