"""A pytest plugin for tests/tools/cpu_per_file.py: at the session's end, the CPU of the pytest process itself (its
own, not what it started) written to the file named by CPU_SELF_FILE, "user sys"."""

from __future__ import annotations

import os
import resource


def pytest_unconfigure(config):
    path = os.environ.get("CPU_SELF_FILE")
    if path:
        r = resource.getrusage(resource.RUSAGE_SELF)
        with open(path, "w") as f:
            f.write(f"{r.ru_utime} {r.ru_stime}\n")
