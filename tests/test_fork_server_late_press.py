"""The suite's commands run as children of its fork server (tests/forkserver.py), which stand for `python -m
sessiond.cli.main`: a Ctrl-C reaching one after its outcome is settled must end it as the real command ends (the
command settled, cli/__init__.py settled()). The zygote imported the package as a program of its own, not the
command, so its children kept Python's Ctrl-C: a late press (test_ask_cli's third, while the child flushed its
output) ended the child with a KeyboardInterrupt traceback and the signal's status (-2) where the command exits
0 or 130. The press is made while the child's last flush, after main() returned, waits on a full pipe."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess

from conftest import popen_cli
from waiting import wait_for

F_SETPIPE_SZ = 1031


def _blocked_writing(pid: int) -> bool:
    with open(f"/proc/{pid}/wchan") as f:
        return f.read() in ("pipe_write", "anon_pipe_write")


def test_a_press_after_a_fork_childs_outcome_is_settled_changes_nothing():
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
        os.write(w, b"x" * 4000)  # the pipe all but full: the child's help (~3.7 KB) waits on it
        proc = popen_cli(["--help"], env=dict(os.environ), stdout=w, stderr=subprocess.PIPE)
    finally:
        os.close(w)
    try:
        wait_for(lambda: _blocked_writing(proc.pid), timeout=60, what="the child's write waiting on the pipe")
        proc.send_signal(signal.SIGINT)
        out = b""
        while chunk := os.read(r, 65536):
            out += chunk
    finally:
        os.close(r)
    _, err = proc.communicate(timeout=30)
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err, err
    assert proc.returncode in (0, 130), (proc.returncode, err)
    if proc.returncode == 0:
        assert out.rstrip().endswith(b"print sessiond's version and exit"), out[-200:]  # written whole
