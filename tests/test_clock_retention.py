"""What is kept for a while (an append's idempotency key, an object gc lets go after its grace) stays kept for
that while whatever the wall clock does: a step forward must not forget what was made minutes ago, nor a step
back make the newest the first forgotten (storage/clock.py `steady`)."""

from __future__ import annotations

import pytest

from clocks import DAY, clocked
from conftest import run_cli

PRUNE_EVERY = 64  # storage/messages.py: appends between two prunings of a session's keys
KEEP = 1000  # storage/messages.py: the keys a session keeps at least


def _appends(c, sid: str, n: int, prefix: str) -> None:
    for i in range(n):
        c.append(sid, "user", f"{prefix} {i}", idempotency_key=f"{prefix}-{i}")


def _contents(c, sid: str) -> list[str]:
    return [m["content"] for m in c.messages(sid, limit=5000)["messages"]]


def _retried_once(c, sid: str, first: dict, text: str, key: str) -> None:
    """A pruning of the session's keys (PRUNE_EVERY appends), then the app's retry of the append `first`: it is
    answered as the first time, nothing appended twice."""
    _appends(c, sid, PRUNE_EVERY, "after")
    again = c.append(sid, "user", text, idempotency_key=key)
    assert again["id"] == first["id"]
    assert _contents(c, sid).count(text) == 1


@pytest.mark.parametrize("restarted", [False, True], ids=["running", "restarted"])
def test_a_retry_after_a_clock_step_forward_is_not_appended_twice(make_daemon, restarted):
    # (an NTP step, a laptop's clock set right: minutes later by the machine; restarted: the clock set right
    # while no daemon ran, a key of the run before of unknown age, kept as promised)
    d, clock = clocked(make_daemon)
    c = d.start().client()
    sid = c.create_session(name="retried")["id"]
    first = c.append(sid, "user", "once", idempotency_key="acknowledged")
    if restarted:
        d.stop()
    clock.step(2 * DAY)
    if restarted:
        c = d.start().client()
    _retried_once(c, sid, first, "once", "acknowledged")


def test_a_clock_step_back_forgets_the_oldest_keys_first(make_daemon):
    d, clock = clocked(make_daemon)
    c = d.start().client()
    sid = c.create_session(name="many")["id"]
    _appends(c, sid, KEEP, "before")
    clock.step(-DAY)
    newest = c.append(sid, "user", "newest", idempotency_key="newest")
    _retried_once(c, sid, newest, "newest", "newest")  # (a pruning, with more than KEEP keys)


def _pushed(d, sid: str) -> None:
    res = run_cli(d.home, "sync", sid, "--wait", "--timeout", "60")
    assert res.returncode == 0, res


def test_gc_s_grace_is_not_shortened_by_a_clock_step_forward(make_daemon, store_dir):
    # each push lets go the manifest its head left: a follower mid-read may still be reading it, so gc frees it
    # only after its grace (24 h by default), which a clock stepped forward must not make pass at once
    d, clock = clocked(make_daemon, store=f"file://{store_dir}")
    c = d.start().client()
    sid = c.create_session(name="pushed", initial_messages=[{"role": "user", "content": "hi"}])["id"]
    _pushed(d, sid)
    c.append(sid, "user", "more")
    _pushed(d, sid)  # (the first head's manifest let go)
    assert c.gc(dry_run=True, grace=0)["objects"] > 0  # (there is something gc would free at once)
    clock.step(2 * DAY)
    report = c.gc()
    assert report["objects"] == 0 and report["kept"] > 0, report


def test_what_an_earlier_run_stamped_is_judged_by_the_wall_clock_once_the_daemon_has_run_an_hour(monkeypatch):
    # a laptop's daemon runs a working day, then is stopped for the night: kept_before(24 h) at -inf until the
    # daemon had run 24 h meant gc's default grace freed nothing there, ever, nor was an idempotency key pruned by
    # age. A stamp from an earlier run is sheltered for the first hour of this one (a retry, a follower's read
    # across the restart, come within it), then judged by the wall clock as it read at this start
    clock, machine = _on_machine(monkeypatch)
    keep = DAY
    assert clock.kept_before(keep) == float("-inf")  # (just started: an earlier run's stamps sheltered)
    machine.awake(clock.RESTART_SHELTER - 1)
    assert clock.kept_before(keep) == float("-inf")
    machine.awake(2)
    assert clock.kept_before(keep) == pytest.approx(clock.steady() - keep)
    assert clock.kept_before(0) == pytest.approx(clock.steady())  # (a grace of 0 takes everything, at once)


class _Machine:
    """The machine's clocks as the kernel keeps them, for storage/clock.py (its `time`): the wall clock, the
    monotonic clock (which stops while the machine is suspended) and the clock since boot (which does not)."""

    CLOCK_BOOTTIME = 7

    def __init__(self, wall: float):
        self.wall, self.mono, self.boot = wall, 1000.0, 1000.0

    def awake(self, s: float) -> None:
        self.wall += s
        self.mono += s
        self.boot += s

    def suspended(self, s: float) -> None:
        self.wall += s
        self.boot += s

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def clock_gettime(self, clk: int) -> float:
        assert clk == self.CLOCK_BOOTTIME
        return self.boot


def test_a_key_stamped_by_a_run_that_slept_through_nights_is_not_aged_by_its_restart(monkeypatch):
    # a laptop's daemon runs for days, the lid closed every night: steady() advanced by the monotonic clock
    # (which a suspend stops) fell behind the wall clock by every night. Within the run no matter; but once
    # restarted, anchored at the wall clock again, a key or a release stamped minutes before the restart looked
    # those nights older, and an hour on was pruned (or freed) well within its 24 h
    clock, machine = _on_machine(monkeypatch)
    for _night in range(3):
        machine.awake(14 * 3600)
        machine.suspended(10 * 3600)
    machine.awake(3600)
    stamped = clock.steady()  # an append's key, a manifest let go: minutes before the restart
    machine.awake(60)
    clock.configure()  # (the daemon restarted)
    machine.awake(clock.RESTART_SHELTER + 1)
    assert clock.kept_before(DAY) < stamped  # made an hour ago: kept for 23 h more
    assert stamped == pytest.approx(machine.wall - clock.RESTART_SHELTER - 61, abs=1)  # (a stamp of its time)


def _on_machine(monkeypatch):
    """storage/clock.py on a _Machine's clocks, configured as a daemon's start does."""
    from sessiond.storage import clock

    machine = _Machine(1.8e9)
    monkeypatch.setattr(clock, "time", machine)
    monkeypatch.delenv(clock.ENV, raising=False)
    monkeypatch.setattr(clock, "_started", None)  # (put back as it was after the test: this process's anchor)
    clock.configure()
    return clock, machine


def test_the_clock_since_boot_counts_a_suspend_on_linux_and_macos():
    """Idleness, gc's grace and an idempotency key's life are judged on the clock since boot (storage/clock.py):
    one that stops while the machine sleeps took a laptop's night for a step of the wall clock (on macOS
    time.monotonic stops in sleep, and a session written before the lid closed was not idle the night through).
    Linux's CLOCK_BOOTTIME and macOS's CLOCK_MONOTONIC count a suspend; elsewhere time.monotonic is all there is."""
    import types

    from sessiond.storage import clock

    linux = types.SimpleNamespace(CLOCK_BOOTTIME=7, CLOCK_MONOTONIC=1)
    mac = types.SimpleNamespace(CLOCK_MONOTONIC=6, CLOCK_UPTIME_RAW=8)
    other = types.SimpleNamespace(CLOCK_MONOTONIC=4)
    assert clock.since_boot_clock("linux", linux) == 7
    assert clock.since_boot_clock("darwin", mac) == 6
    assert clock.since_boot_clock("freebsd13", other) is None
    assert clock.since_boot_clock("win32", types.SimpleNamespace()) is None
