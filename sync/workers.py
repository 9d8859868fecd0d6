"""The threads pushes work on, and the pause of Python's garbage collector while long runs are written.

They belong to an owner's lifetime, not to module import: the daemon makes one `Workers` (through its
Syncer) at start, hands it to every LogWriter, and closes it at stop. A LogWriter given none uses
`shared()`, one made on first use and kept until the process exits (tools, tests, benchmarks).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import os
import threading
from collections.abc import Iterator


def default_push_threads() -> int:
    """Threads of a long push: one per core (their work releases the GIL), at most four."""
    return max(1, min(4, os.cpu_count() or 1))


class Workers:
    """`seal`: threads that seal the pages of a short push beside the event loop (libsodium and BLAKE3
    release the GIL). `push`: the threads of a long push (LogWriter.write_run), `push_threads` of them,
    each reading, encoding, sealing and writing a chunk. Both are started on first use. `gc_paused()`:
    the collector off while any long run of this owner is written.

    The collector is one per process: a process should have one Workers (the daemon's). Two whose
    pauses overlap still leave it as they found it, only paused for less time."""

    def __init__(self, push_threads: int | None = None, seal_threads: int = 2):
        self.push_threads = push_threads or default_push_threads()
        self.seal_threads = seal_threads
        self._lock = threading.Lock()
        self._seal: concurrent.futures.ThreadPoolExecutor | None = None
        self._push: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False
        self._gc_holders = 0  # long runs being written
        self._gc_was_enabled = False

    def _pool(self, attr: str, threads: int, name: str) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("these workers are closed (the daemon is stopping)")
            pool = getattr(self, attr)
            if pool is None:
                pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix=name)
                setattr(self, attr, pool)
            return pool

    @property
    def seal(self) -> concurrent.futures.Executor:
        return self._pool("_seal", self.seal_threads, "sessiond-seal")

    @property
    def push(self) -> concurrent.futures.Executor:
        return self._pool("_push", self.push_threads, "sessiond-push")

    @contextlib.contextmanager
    def gc_paused(self) -> Iterator[None]:
        """Python's cyclic garbage collector off while long runs are written (back on after the last).

        A long run makes an object per operation that lives until its chunk is written (a view of its
        content), so the collector would run every 700 of them and scan them again and again, holding
        the GIL and so stopping every worker: 8-15% of a first push (measured: 100,000 short messages
        0.40-0.43 s with it off, 0.46-0.50 s on). Nothing a push makes is in a cycle: reference counting
        still frees all of it at once. Garbage in cycles made elsewhere in the daemon meanwhile waits
        until the collector is back on, a second or so for a 200 MB session. If it was off before,
        it stays off."""
        with self._lock:
            if not self._gc_holders:
                self._gc_was_enabled = gc.isenabled()
                gc.disable()
            self._gc_holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._gc_holders -= 1
                if not self._gc_holders and self._gc_was_enabled:
                    gc.enable()

    def close(self, wait: bool = True) -> None:
        """Stop the threads (waiting for work under way if `wait`); later use raises RuntimeError.
        Blocking: from the event loop, `await asyncio.to_thread(workers.close)`."""
        with self._lock:
            self._closed = True
            pools, self._seal, self._push = (self._seal, self._push), None, None
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=wait, cancel_futures=True)


_shared: Workers | None = None
_shared_lock = threading.Lock()


def shared() -> Workers:
    """The Workers of a LogWriter given none: made on first use, never closed (its threads are idle
    between pushes and end with the process)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Workers()
        return _shared
