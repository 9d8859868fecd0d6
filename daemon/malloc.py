"""The process's memory allocator, tuned once at daemon start (glibc only)."""

from __future__ import annotations

import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 4 << 20  # bytes: a 1 MiB page's buffers come from the heap, not fresh mmaps
TRIM_THRESHOLD = 32 << 20  # bytes of free heap top kept rather than given back at once


def tune_malloc() -> bool:
    """Keep the sealing of 1 MiB pages off fresh mmapped memory. PyNaCl's public binding allocates a
    new output and input buffer of 256 KiB per chunk (sync/crypto.py); over glibc's default mmap
    threshold (128 KiB, raised dynamically only after a free) each is a new mapping, zero-filled page
    by page: ~600 minor page faults per 1 MiB page sealed. Measured (bench/malloc.py, 2 shared cores,
    bench/results/malloc.json): 384-413 MB/s by default, 1063-1170 MB/s with this, no page faults. The
    same as MALLOC_MMAP_THRESHOLD_=4194304 MALLOC_TRIM_THRESHOLD_=33554432 in the environment.
    glibc only: elsewhere (musl, macOS) nothing is done. Returns whether it was set."""
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
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
