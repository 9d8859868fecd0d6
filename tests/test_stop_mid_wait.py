"""`sessiond stop` while a request waited in the daemon (`sync --wait` for a store that is down, up to its
--timeout; `share`, `rm` and `end` wait for pushes too) waited for that request: the daemon's stop gave the
requests under way aiohttp's 60 s to end, so `stop` said nothing for its 15 s, then killed the daemon
(SIGKILL: no clean stop, nothing of it finished). The stop now gives them a few seconds, then ends them (their
apps told the connection broke), and the daemon stops cleanly."""

from __future__ import annotations

import os
import subprocess
import time

from conftest import DaemonProc, popen_cli, run_cli


def test_stop_while_sync_waits_for_a_store_that_is_down_stops_cleanly(reserved_port, tmp_path):
    d = DaemonProc(str(tmp_path / "home"), f"s5+http://127.0.0.1:{reserved_port.port}").start()
    try:
        with d.client() as c:
            sid = c.create_session(name="waiting", initial_messages=[{"role": "user", "content": "hi"}])["id"]
        proc = popen_cli(
            ["sync", sid, "--wait", "--timeout", "120", "--home", d.home],
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert b"not pushed yet" in proc.stderr.readline()  # it waits: the push failed, said so
            t0 = time.monotonic()
            res = run_cli(d.home, "stop")
            took = time.monotonic() - t0
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert res.returncode == 0 and "killed" not in res.stdout + res.stderr, res
        assert took < 12, took  # not the 15 s stop waits before it kills
        assert proc.returncode != 0, (out, err)
        assert d.proc.wait(10) == 0  # a clean stop
        d.start()
        with d.client() as c:  # the message still waits for its push
            assert c.get_session(sid)["sync"]["pending"] >= 1
    finally:
        d.stop()
