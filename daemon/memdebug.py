"""Where the daemon's memory goes, for whoever hunts a leak: with SESSIOND_TRACEMALLOC=N in the daemon's
environment (N frames a trace keeps; 1 is cheap and names the line), tracemalloc starts with the process
and every SIGUSR2 writes `tracemalloc-<k>.txt` into the home: the top allocation sites now, and what grew
since the first dump (the baseline). Off by default: tracing costs CPU and memory on every allocation.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import signal
import time
import tracemalloc

from ..storage.fsutil import atomic_write

ENV = "SESSIOND_TRACEMALLOC"
TOP = 40


def frames_wanted() -> int:
    """Frames per trace asked for in the environment; 0 when tracing is off."""
    try:
        return max(0, int(os.environ.get(ENV, "0") or 0))
    except ValueError:
        return 0


class MemDebug:
    """Starts tracemalloc and dumps snapshots on SIGUSR2 (only when the environment asks for it)."""

    def __init__(self, folder: str, frames: int):
        self.folder = folder
        self.frames = frames
        self.dumps = 0
        self._baseline: tracemalloc.Snapshot | None = None

    @staticmethod
    def start() -> None:
        """Trace from here on, when the environment asks for it (call it first thing: what the start
        allocates shows among the top sites)."""
        frames = frames_wanted()
        if frames and not tracemalloc.is_tracing():
            tracemalloc.start(frames)

    @classmethod
    def install(cls, folder: str, loop: asyncio.AbstractEventLoop) -> MemDebug | None:
        """Dump on SIGUSR2 into `folder`; None (nothing installed) when tracing is off."""
        frames = frames_wanted()
        if not frames:
            return None
        MemDebug.start()
        md = cls(folder, frames)
        loop.add_signal_handler(signal.SIGUSR2, md.dump)
        return md

    def dump(self) -> str:
        """Write the top sites and the growth since the first dump; returns the file's path."""
        snap = tracemalloc.take_snapshot().filter_traces(
            (
                tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            )
        )
        current, peak = tracemalloc.get_traced_memory()
        key = "traceback" if self.frames > 1 else "lineno"
        lines = [f"# {time.strftime('%Y-%m-%dT%H:%M:%S')} traced {current / 1e6:.1f} MB, peak {peak / 1e6:.1f} MB"]
        heap = malloc_stats()
        if heap:
            lines.append("# malloc: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in heap.items()))
        sql = sqlite_stats()
        if sql:
            lines.append("# sqlite: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sql.items()))
        lines.append(f"## top {TOP} sites")
        for st in snap.statistics(key)[:TOP]:
            lines.append(f"{st.size / 1024:10.1f} KiB {st.count:8d} blocks  {_where(st.traceback)}")
        if self._baseline is not None:
            lines.append(f"## top {TOP} growths since the first dump")
            for d in snap.compare_to(self._baseline, key)[:TOP]:
                lines.append(f"{d.size_diff / 1024:+10.1f} KiB {d.count_diff:+8d} blocks  {_where(d.traceback)}")
        else:
            self._baseline = snap
        self.dumps += 1
        path = os.path.join(self.folder, f"tracemalloc-{self.dumps}.txt")
        atomic_write(path, ("\n".join(lines) + "\n").encode(), 0o600)  # private, as every file of the home
        return path


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
