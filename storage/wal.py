"""The WAL's upkeep, off the append path: a background thread copies the WAL back into the database file
(`PRAGMA wal_checkpoint(PASSIVE)` on a connection of its own) and keeps the WAL file allocated ahead of
its end. storage/connections.py's writer wakes it after its commits and resets the WAL when it is long."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from .testhooks import pause_in_thread

log = logging.getLogger("sessiond.storage")

# The background checkpoint runs once this many rows have changed since the last one (about 800 appends;
# SQLite's own automatic checkpoint, which would run inside a commit, is off on the writer).
CHECKPOINT_ROWS = 2000
# WAL frames past which the WAL is reset (`Connections._reset_wal`). Under steady appends the background
# PASSIVE checkpoint never ends with nothing new since it began, so the writer never starts the WAL over:
# measured, 3.7 GB of WAL and a 6.5 MB wal-index mapped in the daemon (resident, ~7 bytes a frame) after
# 10 minutes of 200 appends/s. 16,384 frames: 64 MB with 4 KiB pages, a 115 KB wal-index; the PASSIVE
# checkpoints have copied nearly all of it by then, so the reset has little left to copy.
WAL_RESET_FRAMES = 16384
# How far ahead of the WAL's end its file is kept allocated, in frames (`Checkpointer._allocate`), up to
# WAL_RESET_FRAMES. A commit that writes past the file's end makes ext4 reserve blocks and grow the file
# inside the write(), and that waits (uninterruptible) while the checkpointer's fsyncs write back the same
# file: the loop thread, sampled during 4,000 single appends, was 18-548 times in ext4's write path
# (ext4_da_get_block_prep, ext4_block_write_begin, ...) with the WAL growing, 0-21 with it allocated ahead
# (bench/results/profile-tail.md). 8,192 frames (32 MB) is more than is written between two checkpoints:
# a single append's commit writes ~6.4 frames and changes ~4 rows, so CHECKPOINT_ROWS is ~3,200 frames.
WAL_ALLOCATE_AHEAD = 8192
WAL_RESET_WAIT_MS = 200  # how long a reset waits for readers (a push's long read) before trying later
# A WAL truncation after a delete (Connections.scrub_soon) that found readers busy (or failed) is tried
# again this often, SCRUB_TRIES times, then twice as long after each try, up to SCRUB_RETRY_MAX_S apart,
# until it is done.
SCRUB_RETRY_S = 0.5
SCRUB_TRIES = 20
SCRUB_RETRY_MAX_S = 60.0
# How long a truncation waits for readers or the background checkpoint, with the writer lock held (so
# every append waits as long): bench/delete.py measured 193 ms with WAL_RESET_WAIT_MS, the background
# checkpoint running; trying again later instead costs nothing.
SCRUB_WAIT_MS = 10
# A truncation frees the WAL's blocks, and appends wait meanwhile (bench/delete.py: 50-100 ms for the
# 32-64 MB kept allocated): it waits until no delete came for this long, so that a clean-up's deletes
# share one.
SCRUB_QUIET_S = 0.5
SCRUB_LATEST_S = 10.0  # ...or once it has waited this long, if deletes never stop for SCRUB_QUIET_S


# A connection's first read, at its opening: SQLite opens the WAL then, and deletes it if the database file is empty
# (a copy over it under way: `cp` truncates first); once open, the connection holds it (Connections._open).
WAL_OPENED = "SELECT 1 FROM sqlite_master LIMIT 1"

Guard = Callable[[], AbstractContextManager[bool]]  # DatabaseFile.checkpointing: False, the file not to be written


def checkpoint(path: str, mode: str, wait_ms: int = WAL_RESET_WAIT_MS, guard: Guard | None = None) -> bool:
    """`PRAGMA wal_checkpoint(mode)` on a connection of its own (a thread's); True if it did all of it
    (no reader or writer kept it from the WAL's end for `wait_ms`); False, not done, if `guard` says no."""
    with guard() if guard is not None else contextlib.nullcontext(True) as go:
        if not go:
            return False
        conn = sqlite3.connect(path, isolation_level=None, timeout=wait_ms / 1000)
        try:
            busy, _, _ = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            return not busy
        finally:
            conn.close()


class Checkpointer:
    """Copies the WAL back into the database file on a thread and connection of its own, when enough has
    been written since the last time (told by the writer after each commit), so no commit ever stalls on
    a checkpoint's fsyncs. PASSIVE: it never waits for, nor blocks, a reader or the writer."""

    def __init__(
        self,
        path: str,
        cap: Callable[[], int] = lambda: WAL_RESET_FRAMES,
        guard: Guard | None = None,
        floor: Callable[[int], None] | None = None,
    ):
        self._path = path
        self._guard = guard or (lambda: contextlib.nullcontext(True))  # (checkpoint's)
        # told, inside the guard, the least the file holds after a checkpoint that copied the whole WAL back
        # (DatabaseFile.at_least): the database's pages as it began, which SQLite sizes the file to
        self._floor = floor
        self._cap = cap  # the most frames the WAL is allocated for (Connections.wal_reset_frames)
        self.frames = 0  # the WAL's length at the last checkpoint, in frames
        self.passes = 0  # checkpoints done (tests read it)
        self.allocated = 0  # bytes of the WAL file allocated ahead so far
        self._wake = threading.Event()
        self._stop = False
        # opened here, by the database's name, while it names the daemon's file (not later on its thread: the file
        # deleted meanwhile, that made an empty one there), and its first read made (SQLite opens the WAL then)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._frame_bytes = 24 + self._conn.execute("PRAGMA page_size").fetchone()[0]
            self._conn.execute(WAL_OPENED).fetchall()
        except BaseException:
            self._conn.close()
            raise
        # the WAL made with the database (the first one seen, if none yet): the only file allocated ahead
        self._wal: tuple[int, int] | None = None
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(path + "-wal")
            self._wal = (st.st_dev, st.st_ino)
        self._thread = threading.Thread(target=self._run, name="sessiond-db-checkpoint", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def truncated(self) -> None:
        """The WAL was checkpointed whole and truncated to nothing (Connections.scrub_soon): its file is
        allocated ahead again now, before appends grow it (a write past the allocated part waits on the
        file system: bench/delete.py)."""
        self.frames = 0
        self.allocated = 0
        self.wake()

    def _run(self) -> None:
        conn, frame_bytes = self._conn, self._frame_bytes
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                self._allocate(frame_bytes)
                try:
                    with self._guard() as go:  # (not into a file copied over the database)
                        if go:
                            pages = conn.execute("PRAGMA page_count").fetchone()[0]
                            busy, self.frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                            pause_in_thread("wal.checkpointed")  # (tests: the checkpoint done, its guard held)
                            if self._floor is not None and not busy and 0 <= self.frames == done:
                                self._floor(pages * (frame_bytes - 24))
                            self.passes += 1
                except sqlite3.Error as e:  # busy or I/O: the next wake tries again; the WAL keeps the data
                    log.warning("background WAL checkpoint failed: %s", e)
                if self._stop:
                    return
        finally:
            conn.close()

    def _allocate(self, frame_bytes: int) -> None:
        """Keep the WAL file allocated WAL_ALLOCATE_AHEAD frames past its end (at most the length the reset
        keeps it within), here rather than by the writer's commits. posix_fallocate makes the blocks without
        writing them; SQLite reads a WAL only as far as its frames' checksums hold, so the zeros past its
        end are never taken for frames (as the old frames past its end after a reset are not)."""
        target = 32 + min(self._cap(), self.frames + WAL_ALLOCATE_AHEAD) * frame_bytes
        if target <= self.allocated or not hasattr(os, "posix_fallocate"):
            return
        try:
            # (the WAL itself carries no POSIX lock of SQLite's, which closing another descriptor would drop:
            # its locks are on the database and -shm files)
            fd = os.open(self._path + "-wal", os.O_RDWR)  # never made here: SQLite makes it with the database
        except FileNotFoundError:
            return
        except OSError as e:  # out of descriptors (EMFILE) and the like: the next wake tries again
            log.debug("WAL allocation: %s", e)
            return
        try:
            st = os.fstat(fd)
            if self._wal is None:
                self._wal = (st.st_dev, st.st_ino)
            elif (st.st_dev, st.st_ino) != self._wal:  # another file put in its place: not the daemon's to grow
                return
            os.posix_fallocate(fd, 0, target)
            self.allocated = target
        except OSError as e:  # a file system without it, or full: the commits grow the WAL as before
            log.debug("WAL allocation: %s", e)
            self.allocated = max(self.allocated, target)  # (not tried again for this length)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join()
