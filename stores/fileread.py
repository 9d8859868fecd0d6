"""A folder store's reads on one thread of its own (stores/file.py).

A read of a folder store (a head, an object, whether objects are there, a look at the heads' journal)
is a few system calls on files the OS mostly holds in its cache: ~7.5 us of CPU for a head. Each went
through `asyncio.to_thread`, which cost ~60 us of CPU more (the default executor's work queue, a
concurrent Future with its lock and condition, the asyncio future chained to it, a worker woken and the
loop woken back), ten of them for each session a follower imports (bench/results/profile-session.md).

Here the event loop hands a read to the store's reader thread through a SimpleQueue, with a future of
its own loop; the thread reads everything queued when it wakes, in order, and hands the results back in
one call into each loop per round (~25 us a read, one at a time). The reads stay off the event loop: a
folder that hangs (a network mount) holds up this store's reads, not the loop nor the daemon's other
threads. A caller that stops waiting (a timeout) leaves its read to finish; its answer is dropped.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
CLOSE_WAIT = 30.0  # seconds close() waits for the reads under way (the writer's the same: filebatch.py)


class Reader:
    """One thread that runs the reads the event loop hands it (started at the first)."""

    def __init__(self, name: str = "sessiond-store-read"):
        self._name = name
        self._jobs: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.rounds = 0  # times the thread woke to read (tests)

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """The future (of the running loop) of fn(*args), called in the reader thread."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._thread is None:
                self._jobs = queue.SimpleQueue()  # its own: a closed thread may still be reading (a hang)
                self._thread = threading.Thread(target=self._run, args=(self._jobs,), name=self._name, daemon=True)
                self._thread.start()
            self._jobs.put((loop, fut, fn, args))
        return fut

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """Stop the thread once what is queued is read, waiting up to `wait` seconds for it (blocking:
        from the loop, through a thread; a read may hang, and then the thread is left to end by itself).
        A read asked for afterwards starts it again."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._jobs.put(None)
        if thread is not None:
            thread.join(wait)

    def _run(self, jobs_in: queue.SimpleQueue) -> None:
        while True:
            job = jobs_in.get()
            jobs, stop = [], job is None
            while job is not None:
                jobs.append(job)
                try:
                    job = jobs_in.get_nowait()
                except queue.Empty:
                    break
                stop = job is None
            self.rounds += 1
            done: dict[asyncio.AbstractEventLoop, list[tuple]] = {}
            for loop, fut, fn, args in jobs:
                out: tuple[asyncio.Future, Any, BaseException | None]
                try:
                    out = (fut, fn(*args), None)
                except BaseException as exc:  # every error goes back to its caller
                    out = (fut, None, exc)
                done.setdefault(loop, []).append(out)
            for loop, results in done.items():
                try:
                    loop.call_soon_threadsafe(_deliver, results)
                except RuntimeError:  # that loop is closed: nobody waits for these
                    pass
            if stop:
                return


def _deliver(results: list[tuple]) -> None:
    for fut, value, exc in results:
        if fut.done():  # its caller stopped waiting (a timeout, cancelled)
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)
