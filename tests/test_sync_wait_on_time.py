"""`sessiond sync --wait --timeout S` ends within S seconds of its start, as whoever runs it counts them: its
timeout counted from the daemon's receipt of the request, so the command's own start (Python importing what it
runs on, ~0.4 s) came on top, and a `--timeout 5` ended 5.4 s after it started. Now the wait asked of the daemon
is what is left of S since the process started, less its exit. The real program, started for real (the suite's
fork server's children have imported everything already), against a portal that hangs."""

from __future__ import annotations

import os
import subprocess
import time

from conftest import PY, DaemonProc
from portalstore import threaded_portal

TIMEOUT = 3.0
LATE = 0.25  # what the command may take past it on a loaded machine (main: 0.35 to 0.45 s, its imports)


def test_sync_wait_ends_within_its_timeout_from_the_command_s_start(tmp_path):
    with threaded_portal() as served:
        d = DaemonProc(str(tmp_path / "home"), served.url)
        try:
            d.start()
            sid = served.push_waiting(d)  # the wait runs out its timeout
            for argv in (["sync", sid], ["sync"]):
                t0 = time.monotonic()
                proc = subprocess.run(
                    [PY, "-m", "sessiond.cli.main", *argv, "--wait", "--timeout", f"{TIMEOUT:g}", "--home", d.home],
                    capture_output=True,
                    env=dict(os.environ),
                    timeout=60,
                )
                took = time.monotonic() - t0
                assert proc.returncode == 1 and b"not everything could be pushed" in proc.stdout, proc
                assert TIMEOUT - 1 < took < TIMEOUT + LATE, (argv, took)
        finally:
            d.stop()
