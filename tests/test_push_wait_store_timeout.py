"""`rm` and `end` of a shared session (and its expiry, with delete_expired) wait for its push as long as a store
call may take, config.toml's store_timeout, as a share does: they waited a fixed 10 s whatever it said, so a
script that set store_timeout = 2 to hear of a store down sooner still waited 10 s for each. Real processes: a
portal that hangs."""

from __future__ import annotations

import re
import time

from conftest import DaemonProc, run_cli, write_config
from portalstore import threaded_portal


def test_rm_and_end_wait_for_their_push_as_long_as_store_timeout(tmp_path):
    with threaded_portal() as served:
        d = DaemonProc(str(tmp_path / "home"), served.url)
        write_config(d.home, store_timeout=2)
        try:
            d.start()
            sid = served.push_waiting(d)  # the pushes wait out store_timeout
            t0 = time.monotonic()
            res = run_cli(d.home, "rm", sid)
            took = time.monotonic() - t0
            assert res.returncode == 1 and "not pushed yet" in res.stderr, res  # refused: nothing deleted
            assert 1.5 < took < 7, took  # main: 10 s
            left = re.search(r"\((\d+) s left\)", res.stderr)  # its countdown: of store_timeout (main: of 10 s)
            assert left is None or int(left[1]) <= 2, res.stderr
            t0 = time.monotonic()
            res = run_cli(d.home, "end", sid)
            took = time.monotonic() - t0
            assert res.returncode == 0 and "snapshot: not pushed yet" in res.stdout, res
            assert 1.5 < took < 7, took  # main: 10 s
        finally:
            d.stop()
