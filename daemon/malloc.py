"""The process's memory allocator, tuned once at daemon start (glibc only)."""

from __future__ import annotations

import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's <malloc.h>
MMAP_THRESHOLD = 4 << 20  # bytes: a 1 MiB page's buffers come from the heap, not fresh mmaps
TRIM_THRESHOLD = 32 << 20  # bytes of free heap top kept rather than given back at once
ARENA_MAX = 1  # every thread allocates from the main heap (see tune_malloc)


def tune_malloc() -> bool:
    """Keep the sealing of 1 MiB pages off fresh mmapped memory, and every thread on one heap.

    Sealing: PyNaCl's public binding allocates a new output and input buffer of 256 KiB per chunk
    (sync/crypto.py); over glibc's default mmap threshold (128 KiB, raised dynamically only after a free)
    each is a new mapping, zero-filled page by page: ~600 minor page faults per 1 MiB page sealed.
    Measured (bench/malloc.py, 2 shared cores, bench/results/malloc.json): 384-413 MB/s by default,
    1063-1170 MB/s with this, no page faults.

    One heap: by default glibc gives each thread that allocates its own arena (up to 8 per core), and a
    thread arena gives its free top back only past the trim threshold, which is 32 MB here (for the
    sealing), larger than such an arena ever gets. So each of the daemon's threads (the default executor's
    file and store calls, the push workers, the bulk reader, the checkpointer) kept the most it ever
    held, plus the holes left by what it allocated and the event loop freed, and the holes kept growing:
    measured (bench/memory.py, 10,000 sessions, no tracing), 8 thread arenas holding 6-7 MB with 1-2 MB in
    use and rising, the daemon's RSS +12.5 MB/h in the second half of 21 minutes (+5.9 with one arena:
    bench/results/profile-memory.md). On one heap a hole one thread leaves is reused by the next. The
    threads hardly contend for it: Python's own objects come from pymalloc under the GIL, and a push
    worker allocates two buffers per 256 KiB it seals (four threads sealing at once: the same CPU a page).

    The same as MALLOC_MMAP_THRESHOLD_=4194304 MALLOC_TRIM_THRESHOLD_=33554432 MALLOC_ARENA_MAX=1 in the
    environment. glibc only: elsewhere (musl, macOS) nothing is done. Returns whether it was set."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt that does this)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(
        mallopt(option, value)
        for option, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_ARENA_MAX, ARENA_MAX),
        )
    )
