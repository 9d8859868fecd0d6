"""Devices whose clocks disagree, and a clock that jumps (storage/clock.py: the daemon's one wall clock, and
the test clock that sets it apart from the machine's). What is judged by the wall clock is a calendar instant
(an expiry, a share code's end); what is waited or measured is monotonic, so a step of the wall clock
neither stalls nor hurries it."""

from __future__ import annotations

import os
import time

import pytest

from clocks import clocked
from conftest import DaemonProc
from sessiond.storage.clock import ENV

HOUR = 3600


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
