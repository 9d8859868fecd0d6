"""Daemons whose wall clock is off the machine's, or stepped while they run: the test clock of
storage/clock.py (SESSIOND_TEST_CLOCK_FILE), a file beside the daemon's home."""

from __future__ import annotations

import os

from conftest import DaemonProc, write_config
from sessiond.storage.clock import ENV, set_test_clock

DAY = 86400.0


class Clock:
    """A daemon's test clock: `step(offset)` sets it `offset` seconds off the machine's clock (the daemon reads
    the new offset at its next look at the time)."""

    def __init__(self, path: str, offset: float) -> None:
        self.path = path
        self.offset = offset
        set_test_clock(path, offset)

    def step(self, offset: float) -> None:
        self.offset = offset
        set_test_clock(self.path, offset)


def clocked(make_daemon, offset: float = 0.0, store: str | None = None, **settings) -> tuple[DaemonProc, Clock]:
    """A daemon from `make_daemon` (not started) with `settings` in its config.toml and a test clock `offset`
    seconds off the machine's."""
    probe = make_daemon(store)
    clock = Clock(os.path.join(os.path.dirname(probe.home), "clock"), offset)
    probe.env[ENV] = clock.path
    if settings:
        write_config(probe.home, **settings)
    return probe, clock


def in_process(monkeypatch, path: str, offset: float):
    """storage/clock.py of this process on a test clock at `path`, `offset` seconds off the machine's, configured as a
    daemon's start does (its state put back after the test); step it with set_test_clock(path, offset). The module."""
    from sessiond.storage import clock

    for name in ("_path", "_seen", "_offset", "_started"):
        monkeypatch.setattr(clock, name, getattr(clock, name))
    set_test_clock(path, offset)
    monkeypatch.setenv(ENV, path)
    clock.configure()
    return clock
