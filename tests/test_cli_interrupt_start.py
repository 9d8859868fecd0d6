"""Ctrl-C in a command's first half second, while Python imports what it runs on, printed a traceback of the
import it cut (KeyboardInterrupt, then exit by SIGINT): now one line, `sessiond: interrupted (Ctrl-C)`, and
exit code 130, as a Ctrl-C later says it. The real program, started for real (not from the suite's fork
server, whose children have imported everything already)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from conftest import PY


def _importing(pid: int, deadline: float) -> bool:
    """Poll until process `pid` has loaded libsodium's binding (imported halfway through the command's
    imports); False if it ended or the deadline passed first."""
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/maps") as f:
                if "_sodium" in f.read():
                    return True
        except OSError:
            return False
        time.sleep(0.001)
    return False


def test_ctrl_c_while_the_command_starts_is_one_line_and_exit_130(tmp_path):
    for extra in ([], ["--json"]):
        for _ in range(5):  # (a run whose imports ended before the signal came is tried again)
            proc = subprocess.Popen(
                [PY, "-m", "sessiond.cli.main", "status", "--home", str(tmp_path / "home"), *extra],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(os.environ),
            )
            landed = _importing(proc.pid, time.monotonic() + 30)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
            assert b"Traceback" not in err, err.decode()  # main: the import's traceback, then KeyboardInterrupt
            if landed and proc.returncode != 3:  # (3: it had started already, and found no daemon)
                break
        else:
            raise AssertionError("the signal never came while the command was starting")
        assert proc.returncode == 130, (proc.returncode, err)
        assert err == b"sessiond: interrupted (Ctrl-C)\n", err
        if extra:
            assert out == b'{"error": {"code": "interrupted", "message": "interrupted (Ctrl-C)"}}\n', out
