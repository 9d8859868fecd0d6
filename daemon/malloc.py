"""The process's memory allocator, tuned once at daemon start (glibc only)."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 4 << 20  # bytes: a 1 MiB page's buffers come from the heap, not fresh mmaps
TRIM_THRESHOLD = 32 << 20  # bytes of free heap top kept rather than given back at once
TRIM_EVERY = 30.0  # seconds between two malloc_trim calls (trim_periodically)

log = logging.getLogger("sessiond.daemon")


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune_malloc() -> bool:
    """Keep the sealing of 1 MiB pages off fresh mmapped memory. PyNaCl's public binding allocates a
    new output and input buffer of 256 KiB per chunk (sync/crypto.py); over glibc's default mmap
    threshold (128 KiB, raised dynamically only after a free) each is a new mapping, zero-filled page
    by page: ~600 minor page faults per 1 MiB page sealed. Measured (bench/malloc.py, 2 shared cores,
    bench/results/malloc.json): 384-413 MB/s by default, 1063-1170 MB/s with this, no page faults. The
    same as MALLOC_MMAP_THRESHOLD_=4194304 MALLOC_TRIM_THRESHOLD_=33554432 in the environment.
    glibc only: elsewhere (musl, macOS) nothing is done. Returns whether it was set."""
    libc = _libc()
    try:
        mallopt = libc.mallopt  # type: ignore[union-attr]
    except AttributeError:  # no libc found, or not glibc (musl has no mallopt that does this)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def trim() -> bool:
    """Give the free memory every malloc arena holds back to the OS (glibc's malloc_trim(0): the heap
    tops, and the free pages inside the heaps). Returns whether it could (glibc only)."""
    libc = _libc()
    try:
        fn = libc.malloc_trim  # type: ignore[union-attr]
    except AttributeError:
        return False
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    fn(0)
    return True


async def trim_periodically(every: float = TRIM_EVERY) -> None:
    """`trim()` every `every` seconds, off the event loop. With TRIM_THRESHOLD this high, glibc gives
    back nothing by itself: the buffers of pushes, replies and SQLite reads that every thread frees
    stay in its arena, free but resident, and the RSS of a daemon under steady appends climbs for
    its first half hour (measured: bench/results/memory.json). A trim of tens of MB takes a few ms;
    one with little to give back, microseconds. Between two trims, pushes keep their fast buffers."""
    if _libc() is None:
        return
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(trim)
        except asyncio.CancelledError:
            raise
        except Exception:  # never let the allocator's housekeeping stop the daemon
            log.exception("malloc_trim failed")
