"""Sealing 1 MiB pages with and without the daemon's malloc tuning (daemon/malloc.py tune_malloc).

Each variant runs in a fresh process (the setting cannot be undone in one): it seals PAGES pages of
1020 KiB through sync/crypto.py (the push's path) and reports the CPU time (thread_time) of the best
of ROUNDS rounds, and the minor page faults counted over all rounds. Prints JSON; run:
    python bench/malloc.py > bench/results/malloc.json
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time

PAGES = 32
ROUNDS = 15
SIZE = 1020 * 1024  # PAGE_MAX: a full page


def measure(tuned: bool) -> dict:
    from sessiond.sync.crypto import encrypt

    if tuned:
        from sessiond.daemon.malloc import tune_malloc

        assert tune_malloc(), "mallopt refused"
    pages = [os.urandom(SIZE) for _ in range(PAGES)]
    key = bytes(32)
    encrypt(pages[0], key)  # warm-up
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    best = float("inf")
    for _ in range(ROUNDS):
        t = time.thread_time()
        for p in pages:
            encrypt(p, key)
        best = min(best, time.thread_time() - t)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {
        "encrypt_mb_per_s": round(PAGES * SIZE / best / 1e6),
        "minor_page_faults_per_page": round(faults / (PAGES * ROUNDS), 1),
    }


def main() -> None:
    if len(sys.argv) > 1:
        print(json.dumps(measure(sys.argv[1] == "tuned")))
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = {}
    for variant in ("default", "tuned", "default", "tuned"):  # interleaved, twice: load changes over time
        r = subprocess.run([sys.executable, __file__, variant], capture_output=True, text=True, env=env, check=True)
        out.setdefault(variant, []).append(json.loads(r.stdout))
    print(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "machine": f"{os.cpu_count()} cores, {platform.machine()}, load average {os.getloadavg()[0]:.1f}",
                "command": "python bench/malloc.py",
                "what": f"sync/crypto.py encrypt of {PAGES} pages of 1020 KiB, CPU time, best of {ROUNDS} rounds, "
                "each variant in a fresh process, run twice interleaved; tuned = daemon/malloc.py tune_malloc() "
                "(mallopt M_MMAP_THRESHOLD 4 MiB, M_TRIM_THRESHOLD 32 MiB)",
                "glibc": platform.libc_ver()[1] or None,
                "runs": out,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
