"""A session's last activity as its idleness is judged: real elapsed time, whatever the wall clock does while the
daemon runs.

A session's `last_activity` is stored as a wall-clock stamp (`now()`; `ls`, `show` and an export read it), and its
idle timeout, `cleanup --older-than` and the clean-up's plans compare it with the wall clock. A step of that clock
forward while the daemon runs (a machine with no RTC set right by NTP an hour after it booted at a wrong date, a
clock set by hand) made a session written to seconds before idle by the step: ended by the clean-up, its next write
refused as expired, deleted by `cleanup --older-than`. So every last activity stamped during this run is noted
here with how far the wall clock had been stepped then (clock.stepped(), as `counted`), and judged (`judged`)
shifted by the steps since: a stamp of 12:00 before a step of an hour forward is 13:00 on the clock as it reads
now, the time it was by that clock. A stamp of an earlier run (no note) is judged as stored: the wall clock
between runs is unknown, and only a step forward while no daemon ran ages it.

Noted by the writer's triggers (`watch`), whatever write sets the column (an append, an update, another device's
writes arriving, a session made or imported), in the writer's transaction (an append's, a session's or a chat's
making, each read before its wait for the writer, with the steps counted at its stamp's own read of the clock,
`stamps`, not at its write: a step in between was lost); a note whose stamp is
not the row's (a transaction rolled back, a write the triggers did not see) is not used. One note a session (10,000
sessions: a few MB at most), dropped with its session's row. Process-wide, as the clock is: notes of two databases
in one process (the tests' devices) for one session disagree on its stamp, and each judges by its own stamp alone."""

from __future__ import annotations

import sqlite3
from typing import Any

from .clock import stamped, stepped

# Less than this between the wall clock and the clock since boot is their drift (NTP slewing the wall clock, each
# read's own delay), not a step: a last activity judged shifted by it moved a few ms between two reads of a session
# nothing had written to (`ls` twice disagreed), while an idle timeout or a clean-up counts in seconds at least
DRIFT = 1.0
# The wall clock's steps as counted (`counted()`): stepped() as it read when it last moved DRIFT or more from the
# count. One value between two reads, so a session's listed time moves only at a step; judged by each read's own
# stepped(), it moved by the drift again after any step, and steps under DRIFT added up were lost for good.
_counted = [0.0]
_noted: dict[str, tuple[float, float]] = {}  # session id -> (its last_activity as stamped, counted() then)
# An append's stamp (a session's or a chat's making's) -> counted() as of its very read of the wall clock (`stamp`),
# taken by the note of the row it is written to. The trigger's own count was of the moment the statement ran, after
# its wait for the writer: a step in between paired a stamp of before it with the count after it, and that stamp was
# never moved by that step (a session written to a moment ago judged idle by the step). A stamp noted with no moment
# here (another writer's) takes the trigger's count, as before; one never written (a refused append) is dropped with
# the rest at _MOMENTS.
_moments: dict[float, float] = {}
_MOMENTS = 256


def _count(now: float) -> float:
    if abs(now - _counted[0]) >= DRIFT:
        _counted[0] = now
    return _counted[0]


def counted() -> float:
    """The wall clock's steps since the daemon's start (seconds, forward positive) as counted: a drift under DRIFT
    from the last count is none; once it moves DRIFT or more (one step, or several small ones), all of it is."""
    return _count(stepped())


def stamps() -> tuple[float, float]:
    """now() as a write's last activity, its steps counted as of the same read of the wall clock, for its note;
    and steady() of that moment (storage/clock.py `stamped`: an append's idempotency key's stamp, from the same
    read of the clock since boot, not a second one)."""
    t, steps, kept = stamped()
    if len(_moments) >= _MOMENTS:
        _moments.clear()
    _moments[t] = _count(steps)
    return t, kept


def stamp() -> float:
    """now() as a write's last activity, noted as `stamps` notes it (a session's or a chat's making)."""
    return stamps()[0]


_WATCH_SQL = """
CREATE TEMP TRIGGER activity_made AFTER INSERT ON main.sessions BEGIN
    SELECT sessiond_activity(new.id, new.last_activity);
END;
CREATE TEMP TRIGGER activity_moved AFTER UPDATE OF last_activity ON main.sessions
    WHEN new.last_activity IS NOT old.last_activity BEGIN
    SELECT sessiond_activity(new.id, new.last_activity);
END;
CREATE TEMP TRIGGER activity_gone AFTER DELETE ON main.sessions BEGIN
    SELECT sessiond_activity(old.id, NULL);
END;
"""


def _note(sid: str, stamp: float | None) -> None:
    if stamp is None:
        _noted.pop(sid, None)
    elif isinstance(stamp, (int, float)):
        at = _moments.pop(stamp, None)
        _noted[sid] = (stamp, counted() if at is None else at)


def watch(writer: sqlite3.Connection) -> None:
    """Have the writer's every change of a session's last_activity noted (TEMP triggers: in its connection's memory,
    nothing in the database file), and a deleted session's note dropped."""
    writer.create_function("sessiond_activity", 2, _note)
    writer.executescript(_WATCH_SQL)


def judged(sid: Any, stamp: Any) -> Any:
    """Session `sid`'s last activity `stamp` (as stored) on the wall clock as it reads now: shifted by the steps of
    the wall clock since it was stamped, if it was stamped this run; as stored otherwise. (Rounded to the
    millisecond, as stamps are: no step, no shift.)"""
    seen = _noted.get(sid) if isinstance(sid, str) else None
    if seen is None or seen[0] != stamp:
        return stamp
    shift = counted() - seen[1]  # (0 with no step counted since: the clocks' drift moves no listed time)
    return stamp + round(shift * 1000) / 1000 if shift else stamp


def most_set_back() -> float:
    """How far (seconds, 0 or more) `judged` sets a stamp of this run back at most: what a query of the stored
    stamps before a time must add to it to miss none judged before it."""
    now = counted()
    return max((0.0, *(seen[1] - now for seen in _noted.values())))
