"""Devices whose clocks disagree, and a clock that jumps (storage/clock.py: the daemon's one wall clock, and
the test clock that sets it apart from the machine's). What is judged by the wall clock is a calendar instant
(an expiry, a share code's end); what is waited or measured is monotonic, so a step of the wall clock
neither stalls nor hurries it."""

from __future__ import annotations

import os
import time

import pytest

from clocks import DAY, clocked
from conftest import DaemonProc, wait_for
from sessiond.storage.clock import ENV

HOUR = 3600
LATE = 3.0  # seconds past its expiry a session may still read as active on a busy machine


def test_a_daemon_stamps_by_its_own_clock(make_daemon):
    d, _clock = clocked(make_daemon, -HOUR)
    c = d.start().client()
    made = c.create_session(name="behind")["created_at"]
    assert abs(made - (time.time() - HOUR)) < 60, made


def test_a_stray_clock_variable_is_refused_at_start(make_daemon, tmp_path):
    # (a production daemon's clock is never set by a variable left in its environment: only a test clock
    # file, which says what it is in its first line, is taken)
    plain = tmp_path / "offset"
    plain.write_text("3600\n")
    d: DaemonProc = make_daemon()
    d.env[ENV] = str(plain)
    with pytest.raises(RuntimeError, match="not a test clock file"):
        d.start()
    assert not os.path.exists(d.socket)


def test_a_clock_stepped_back_a_day_leaves_the_cleanup_on_time(make_daemon):
    # the clean-up's last run, a day ahead of the clock after an NTP step back, must not hold its next run
    # (or any session's end) for that day
    d, clock = clocked(make_daemon, cleanup_interval=HOUR)
    c = d.start().client()
    first = c.create_session(name="first", expires_in=1)["id"]
    wait_for(lambda: c.get_session(first)["status"] == "ended", timeout=1 + LATE, what="the first's end")
    clock.step(-DAY)
    sid = c.create_session(name="after the step", expires_in=1)["id"]
    wait_for(lambda: c.get_session(sid)["status"] == "ended", timeout=1 + LATE, what="its end at its expiry")
