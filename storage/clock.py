"""The wall clock the daemon judges by, and the tests' way to set it apart from the machine's.

Every time the daemon stamps or compares with the calendar (a message's time, an expiry, a share code's end,
a record's validity, a server's Retry-After date) it reads `wall()`. Durations it waits or measures (retry
backoffs, deadlines, intervals between runs) are read from the monotonic clock, never from this one: a wall
clock stepped back a day, or forward, must not make a wait a day long or a deadline pass at once. File times
(st_mtime) are the machine's own and compared with `time.time()` directly.

What is kept for a while and then deleted (an append's idempotency key, an object gc frees after its grace) is
stamped and judged by `steady()`, not `wall()`: the wall clock as it read at the daemon's start, advanced by the
clock since boot since (`_elapsed`), so that no step of the wall clock while the daemon runs ages a stamp. A stamp
made before this start (by an earlier run, whose scale was anchored to the wall clock then) is of unknown age, the
wall clock perhaps stepped in between: it is sheltered for this run's first `RESTART_SHELTER` (an hour; or D, what
was promised, if shorter: a retry of an append across the restart, a follower's read across it, come within that),
then judged by the wall clock as it read at this start (`kept_before`): a daemon stopped every night still frees
and forgets by day, and only a wall clock stepped forward while no daemon ran can age such a stamp. The clock
since boot is Linux's CLOCK_BOOTTIME, which counts a suspend, not CLOCK_MONOTONIC (time.monotonic), which does
not: by that one a laptop's daemon running for days, the lid closed every night, stamped every night's time behind
the wall clock, and once restarted (anchored at the wall clock again) judged what it stamped minutes before those
nights older (an idempotency key pruned, a manifest freed, an hour on, well within their 24 h). On macOS it is
CLOCK_MONOTONIC, which counts a suspend there; elsewhere the monotonic clock is used.

A test gives a daemon a clock of its own (a device whose clock is off, or one stepped while it runs) with
SESSIOND_TEST_CLOCK_FILE naming a file whose first line is `TEST_CLOCK_MAGIC` and whose second line is the
offset in seconds (negative: behind) added to the machine's clock; the file is read again whenever it
changes (its mtime or inode), so a test steps the clock by replacing it. Only the daemon's start (and a
relay's, `sessiond serve`: its logins' times) reads the variable (`configure`); a file without that first
line is refused there (the daemon does not start), so a stray variable cannot set a production daemon's
clock by accident, and a clock that is set is logged at start as a warning.
Without the variable `wall()` is `time.time()`."""

from __future__ import annotations

import datetime as dt
import math
import os
import stat
import sys
import time
from pathlib import Path

ENV = "SESSIOND_TEST_CLOCK_FILE"
TEST_CLOCK_MAGIC = "sessiond test clock: not for production"


class TestClockError(ValueError):
    """SESSIOND_TEST_CLOCK_FILE names no test clock file."""


_path: str | None = None  # the test clock's file; None: the machine's clock
_seen: tuple[int, int] | None = None  # (inode, mtime_ns) of the file as last read
_offset = 0.0
# what an earlier run stamped is kept for this long of a run at least (kept_before)
RESTART_SHELTER = 3600.0
_started: tuple[float, float] | None = None  # (wall(), _elapsed()) at the daemon's start: steady()'s anchor


def _read(path: str) -> float:
    try:
        regular = stat.S_ISREG(os.stat(path).st_mode)  # (a FIFO's read would wait for a writer: the start hung)
        lines = Path(path).read_bytes().decode("utf-8", "replace").splitlines() if regular else []
    except OSError as exc:
        raise TestClockError(f"{ENV}: cannot read {path} ({exc.strerror}); unset {ENV}") from None
    if len(lines) < 2 or lines[0] != TEST_CLOCK_MAGIC:
        raise TestClockError(
            f"{ENV} names {path}, which is not a test clock file (its first line must be {TEST_CLOCK_MAGIC!r}); "
            f"unset {ENV}: it is for sessiond's tests only"
        )
    try:
        return float(lines[1])
    except ValueError:
        raise TestClockError(f"{ENV}: {path}'s second line is not an offset in seconds: {lines[1]!r}") from None


def configure() -> float | None:
    """At the daemon's start: take the test clock SESSIOND_TEST_CLOCK_FILE names, if any (TestClockError if it
    names no test clock file). The offset it sets, or None when the machine's clock is used."""
    global _path, _seen, _offset, _started
    path = os.environ.get(ENV)
    if not path:
        _path = None
    else:
        _offset = _read(path)
        st = os.stat(path)
        _path, _seen = path, (st.st_ino, st.st_mtime_ns)
    _started = (wall(), _elapsed())
    return _offset if path else None


def wall() -> float:
    """Seconds since the epoch by this device's wall clock (the test clock's, when a test set one)."""
    if _path is None:
        return time.time()
    return time.time() + _test_offset(_path)


def is_test_clock() -> bool:
    """Whether a test set this process's clock (SESSIOND_TEST_CLOCK_FILE): the clean-up then looks for a step of it
    every second, not every 10 (daemon/cleanuploop.py `wall_look`), so that a test stepping it waits a second."""
    return _path is not None


def since_boot_clock(platform: str, clocks: object) -> int | None:
    """The clock_gettime clock that no step of the wall clock moves and a suspend does not stop, on `platform`
    (sys.platform) given the `time` module's clock ids (`clocks`): Linux's CLOCK_BOOTTIME; macOS's CLOCK_MONOTONIC,
    which counts the time asleep there (time.monotonic, mach_absolute_time, does not: a laptop's night would read
    as a step of the wall clock, a session written before the lid closed not idle the night through). None
    elsewhere: time.monotonic, which may stop in a suspend, is what there is."""
    if platform.startswith("linux"):
        return getattr(clocks, "CLOCK_BOOTTIME", None)
    if platform == "darwin":
        return getattr(clocks, "CLOCK_MONOTONIC", None)
    return None


_BOOT_CLOCK = since_boot_clock(sys.platform, time)


def _elapsed() -> float:
    """Seconds on a clock no step of the wall clock moves and a suspend does not stop (since_boot_clock; the
    monotonic clock where there is none)."""
    return time.monotonic() if _BOOT_CLOCK is None else time.clock_gettime(_BOOT_CLOCK)


def _anchor() -> tuple[float, float]:
    global _started
    if _started is None:  # (storage used without a daemon: anchored at its first stamp)
        _started = (wall(), _elapsed())
    return _started


def steady() -> float:
    """Seconds since the epoch by the wall clock as it read at the daemon's start, advanced by the clock since
    boot since (`_elapsed`): what a kept thing is stamped with and judged by (`kept_before`); no step of the wall
    clock moves it."""
    at_wall, at_boot = _anchor()
    return round((at_wall + _elapsed() - at_boot) * 1000) / 1000


def stepped() -> float:
    """Seconds the wall clock has been stepped since the daemon's start, all steps summed (forward: positive):
    `wall()` less `steady()`, unrounded (storage/activity.py shifts a last activity stamped this run by the steps
    since)."""
    at_wall, at_boot = _anchor()
    return wall() - (at_wall + _elapsed() - at_boot)


def stamped() -> tuple[float, float, float]:
    """`wall()` rounded to the millisecond as a stamp is (model.now), `stepped()` as of that very read of the
    wall clock (a stamp's steps with no moment between the two for a step to land in), and `steady()` of the same
    read of the clock since boot (an append's idempotency key's stamp, of the moment of its last activity's)."""
    at_wall, at_boot = _anchor()
    w = wall()
    s = at_wall + _elapsed() - at_boot
    return round(w * 1000) / 1000, w - s, round(s * 1000) / 1000


def started() -> float:
    """The wall clock as it read at the daemon's start: `steady()` then (its anchor, rounded as it rounds: no
    steady() of this run is less). A stamp of an earlier run later than this is of a wall clock stepped back
    since, and counts as made at the start."""
    return round(_anchor()[0] * 1000) / 1000


def running() -> float:
    """Seconds the daemon has run (the clock since boot since its start: a suspend counted)."""
    return _elapsed() - _anchor()[1]


def kept_before(keep: float) -> float:
    """The `steady()` stamp before which (at or before) a thing promised to be kept at least `keep` seconds may
    be deleted: `steady() - keep`, but -inf for this run's first min(keep, RESTART_SHELTER) seconds (what an
    earlier run stamped is sheltered then; this run's own stamps are younger than `keep` anyway). Not -inf
    until the daemon has run `keep`: with a 24 h keep, a daemon stopped every night would free nothing."""
    if running() < min(keep, RESTART_SHELTER):
        return float("-inf")
    return steady() - keep


def wall_utc() -> dt.datetime:
    """`wall()` as an aware UTC datetime (IPNS validity times)."""
    return dt.datetime.fromtimestamp(wall(), dt.UTC)


def _test_offset(path: str) -> float:
    global _seen, _offset
    try:
        st = os.stat(path)
    except OSError:
        return _offset  # (being replaced: the last offset read)
    if (st.st_ino, st.st_mtime_ns) != _seen:
        try:
            _offset = _read(path)
            _seen = (st.st_ino, st.st_mtime_ns)
        except TestClockError:
            pass  # (caught mid-write: read at the next look)
    return _offset


def set_test_clock(path: str, offset: float) -> None:
    """For the tests: write (or step) the test clock at `path` to `offset` seconds off the machine's clock,
    the file replaced whole so that a daemon reading it never sees half of it."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{TEST_CLOCK_MAGIC}\n{offset!r}\n")
    os.replace(tmp, path)


def wait_said(secs: float) -> str:
    """A wait of `secs` seconds (a server's Retry-After) in words a person reads, rounded up so that no retry
    comes early: 2.5 s, 90 s, 25 minutes, 5 hours, 1,000 days (not 8.64e+07 s)."""
    if secs < 10:
        return f"{math.ceil(secs * 10) / 10:g} s"  # (tenths: a wait of 5.93128 s is said 6 s)
    if secs < 120:
        return f"{math.ceil(secs)} s"
    for unit, size, below in (("minute", 60, 7200), ("hour", 3600, 2 * 86400), ("day", 86400, 100 * 365 * 86400)):
        if secs < below:
            n = math.ceil(secs / size)
            return f"{n:,} {unit}{'' if n == 1 else 's'}"
    return "more than 100 years"
