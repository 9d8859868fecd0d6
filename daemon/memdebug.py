"""Where the daemon's memory goes, for whoever hunts a leak: with SESSIOND_TRACEMALLOC=N in the daemon's
environment (N frames a trace keeps; 1 is cheap and names the line), tracemalloc starts with the process
and every SIGUSR2 writes `tracemalloc-<k>.txt` into the home: the top allocation sites now, and what grew
since the first dump (the baseline). Off by default: tracing costs CPU and memory on every allocation.

SESSIOND_MEMSTATS=1 (without tracing, so the figures are the daemon's own) makes every SIGUSR2 write
`memstats-<k>.txt` instead: the process's resident memory by kind of mapping (glibc's heap, the other anonymous
maps, files), glibc's and SQLite's counters, and the live objects the
garbage collector tracks, counted by type with their own sizes, and what changed since the first dump.
With both set, the tracemalloc dump has these sections too.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import os
import signal
import sys
import time
import tracemalloc

from ..storage.fsutil import atomic_write

ENV = "SESSIOND_TRACEMALLOC"
STATS_ENV = "SESSIOND_MEMSTATS"
TOP = 40


def frames_wanted() -> int:
    """Frames per trace asked for in the environment; 0 when tracing is off."""
    try:
        return max(0, int(os.environ.get(ENV, "0") or 0))
    except ValueError:
        return 0


def stats_wanted() -> bool:
    """Whether the environment asks for the untraced dumps (SESSIOND_MEMSTATS=1)."""
    return os.environ.get(STATS_ENV, "") not in ("", "0")


class MemDebug:
    """Starts tracemalloc and dumps snapshots on SIGUSR2 (only when the environment asks for it)."""

    def __init__(self, folder: str, frames: int):
        self.folder = folder
        self.frames = frames
        self.dumps = 0
        self._baseline: tracemalloc.Snapshot | None = None
        self._census0: dict[str, tuple[int, int]] | None = None

    @staticmethod
    def start() -> None:
        """Trace from here on, when the environment asks for it (call it first thing: what the start
        allocates shows among the top sites)."""
        frames = frames_wanted()
        if frames and not tracemalloc.is_tracing():
            tracemalloc.start(frames)

    @classmethod
    def install(cls, folder: str, loop: asyncio.AbstractEventLoop) -> MemDebug | None:
        """Dump on SIGUSR2 into `folder`; None (nothing installed) when neither tracing nor the stats are
        asked for."""
        frames = frames_wanted()
        if not frames and not stats_wanted():
            return None
        MemDebug.start()
        md = cls(folder, frames)
        loop.add_signal_handler(signal.SIGUSR2, md.dump)
        return md

    def dump(self) -> str:
        """Write the dump (the module's note says what is in it); returns the file's path."""
        lines = [f"# {time.strftime('%Y-%m-%dT%H:%M:%S')}"]
        heap = malloc_stats()
        if heap:
            lines.append("# malloc: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in heap.items()))
        sql = sqlite_stats()
        if sql:
            lines.append("# sqlite: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sql.items()))
        rss = resident_by_kind()
        if rss:
            lines.append("# resident: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in rss.items()))
        if self.frames:
            lines += self._traces()
        if stats_wanted():
            lines += self._census()
        self.dumps += 1
        name = "tracemalloc" if self.frames else "memstats"
        path = os.path.join(self.folder, f"{name}-{self.dumps}.txt")
        atomic_write(path, ("\n".join(lines) + "\n").encode(), 0o600)  # private, as every file of the home
        return path

    def _census(self) -> list[str]:
        """The live objects the collector tracks, by type: count and own size, and the change since the
        first dump (dicts, lists, sets, instances; not strings or bytes, which it does not track)."""
        now = census()
        lines = [f"## objects by type (the collector's): top {TOP} by size"]
        for kind, (n, size) in sorted(now.items(), key=lambda kv: -kv[1][1])[:TOP]:
            lines.append(f"{size / 1024:10.1f} KiB {n:8d} objects  {kind}")
        if self._census0 is None:
            self._census0 = now
        else:
            before = self._census0
            diff = {
                k: (now.get(k, (0, 0))[0] - before.get(k, (0, 0))[0], now.get(k, (0, 0))[1] - before.get(k, (0, 0))[1])
                for k in now.keys() | before.keys()
            }
            lines.append(f"## top {TOP} growths since the first dump")
            for kind, (n, size) in sorted(diff.items(), key=lambda kv: -abs(kv[1][1]))[:TOP]:
                lines.append(f"{size / 1024:+10.1f} KiB {n:+8d} objects  {kind}")
        return lines

    def _traces(self) -> list[str]:
        snap = tracemalloc.take_snapshot().filter_traces(
            (
                tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            )
        )
        current, peak = tracemalloc.get_traced_memory()
        key = "traceback" if self.frames > 1 else "lineno"
        lines = [f"# traced {current / 1e6:.1f} MB, peak {peak / 1e6:.1f} MB", f"## top {TOP} sites"]
        for st in snap.statistics(key)[:TOP]:
            lines.append(f"{st.size / 1024:10.1f} KiB {st.count:8d} blocks  {_where(st.traceback)}")
        if self._baseline is not None:
            lines.append(f"## top {TOP} growths since the first dump")
            for d in snap.compare_to(self._baseline, key)[:TOP]:
                lines.append(f"{d.size_diff / 1024:+10.1f} KiB {d.count_diff:+8d} blocks  {_where(d.traceback)}")
        else:
            self._baseline = snap
        return lines


def census() -> dict[str, tuple[int, int]]:
    """{type's qualified name: (live objects, their own sizes in bytes)} over what the collector tracks."""
    out: dict[str, list[int]] = {}
    for obj in gc.get_objects():
        t = type(obj)
        kind = f"{t.__module__}.{t.__qualname__}"
        entry = out.get(kind)
        if entry is None:
            entry = out[kind] = [0, 0]
        entry[0] += 1
        entry[1] += sys.getsizeof(obj, 0)
    return {k: (n, size) for k, (n, size) in out.items()}


def resident_by_kind() -> dict[str, int]:
    """The process's resident bytes by kind of mapping, from /proc/self/smaps: glibc's heap (brk), the
    other anonymous maps (Python's object arenas, glibc's chunks past its mmap threshold: the malloc
    line's "mmapped", thread stacks; the kernel merges neighbouring maps, so these are not told apart),
    and file-backed pages (the database's memory map, code); {} where there is no /proc."""
    out = {"heap": 0, "other anonymous": 0, "files": 0}
    try:
        with open("/proc/self/smaps") as f:
            kind = "files"
            for line in f:
                first = line.split(maxsplit=6)
                if "-" in first[0] and len(first) >= 5 and not first[0].endswith(":"):
                    path = first[5].strip() if len(first) > 5 else ""
                    if path == "[heap]":
                        kind = "heap"
                    elif first[4] != "0" or (path and not path.startswith("[")):
                        kind = "files"
                    else:
                        kind = "other anonymous"
                elif first[0] == "Rss:":
                    out[kind] += int(first[1]) * 1024
    except OSError:
        return {}
    return out


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
        + ("keepcost",)
    ]


def malloc_stats() -> dict[str, int]:
    """glibc's heap totals (mallinfo2, glibc 2.33+): what the allocator holds from the OS, what of it is
    in use, what is free but kept; {} elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = _Mallinfo2
    m = fn()
    return {"heap": m.arena, "mmapped": m.hblkhd, "in use": m.uordblks, "free": m.fordblks, "top": m.keepcost}


def sqlite_stats() -> dict[str, int]:
    """What SQLite itself holds from malloc in this process, every connection together (page caches,
    statements, schemas): not Python objects, so not in tracemalloc's count; {} where the library's
    counters cannot be reached."""
    import _sqlite3

    try:
        lib = ctypes.CDLL(_sqlite3.__file__)
        used, highwater = lib.sqlite3_memory_used, lib.sqlite3_memory_highwater
    except (OSError, AttributeError):
        return {}
    used.restype = highwater.restype = ctypes.c_int64
    highwater.argtypes = [ctypes.c_int]
    return {"in use": used(), "peak": highwater(0)}


def _where(tb: tracemalloc.Traceback) -> str:
    return " <- ".join(f"{fr.filename.rsplit('/sessiond/', 1)[-1]}:{fr.lineno}" for fr in tb)
