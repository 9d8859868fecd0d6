"""A small run of bench/load.py: concurrent clients, many sessions, a second daemon following them."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))

from load import run


def test_load_small():
    res = run(sessions=24, messages=20, clients=6, timeout=120)
    assert res["error_count"] == 0, res["errors"]
    assert res["identical"], res
    assert res["rss_mb_end"]["a"] < 300 and res["rss_mb_end"]["b"] < 300, res
    assert res["pushes_per_second"] > 0 and res["cpu_ms_per_append"] > 0, res  # read from the daemon's status
