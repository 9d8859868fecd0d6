"""A Ctrl-C that reaches the `sessiond` command after it has settled its exit code (a user's third press while
`ask` says what was kept, as the command ends): Python's end (the logging module's clean-up, threads joined) was
cut by a KeyboardInterrupt with a traceback, and the exit status was the signal's (-2), not the command's. Once
the command's outcome is settled, the command (only: a program importing the package keeps its own Ctrl-C) ends
as it settled, whatever Ctrl-C comes while it exits. The real program, started for real: the press is made from
within it, right after main() returned, so that it lands where a late press does (not a timing)."""

from __future__ import annotations

import subprocess

from conftest import PY

LATE_PRESS = """
import os, signal, sys, time
sys.argv = ["sessiond", "--version"]
from sessiond.cli.main import main
code = main()
os.kill(os.getpid(), signal.SIGINT)  # the press, after the outcome is settled
time.sleep(0.2)  # (the interpreter's end: where it lands)
sys.exit(code)
"""


def test_ctrl_c_after_the_command_settled_its_outcome_changes_nothing():
    res = subprocess.run([PY, "-c", LATE_PRESS], capture_output=True, timeout=60)
    assert res.returncode == 0, res
    assert b"Traceback" not in res.stderr and b"KeyboardInterrupt" not in res.stderr, res.stderr
    assert res.stdout.startswith(b"sessiond "), res.stdout
