"""For the test suite only: `start` forking its daemon rather than starting it as a new program.

The suite runs its CLI calls as children of a process that has imported sessiond once (tests/forkserver.py);
a `start` there then spent ~0.5 s of CPU on its daemon's imports again (~90 starts). With
SESSIOND_TEST_FORK_START=1 (set by the suite's fork server alone, tests/conftest.py; never by the product), `start`
forks and runs `daemon ...` in the copy, as the new program would: its own session, stdin /dev/null, stdout and
stderr its daemon.out, only the descriptors passed open, the same environment. What differs is its command line
(/proc/PID/cmdline is the forking process's): a test reading it leaves the variable unset (the `exec_start` mark).
"""

from __future__ import annotations

import os
import subprocess
import sys

FORK_START_ENV = "SESSIOND_TEST_FORK_START"


def fork_wanted() -> bool:
    return os.environ.get(FORK_START_ENV) == "1"


class ForkedDaemon:
    """What `start` uses of subprocess.Popen (pid, wait, returncode), for a forked daemon."""

    def __init__(self, args: list[str], pid: int) -> None:
        self.args = args
        self.pid = pid
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            pid, status = os.waitpid(self.pid, 0 if deadline is None else os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
            elif deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            else:
                time.sleep(0.01)  # (polls the child's exit until the deadline, as Popen.wait does)
        return self.returncode


def fork_daemon(args: list[str], out_fd: int, passed: list[int]) -> ForkedDaemon:
    """`sessiond *args` run in a forked copy of this process, started as `start` starts the program:
    Popen(stdin=DEVNULL, stdout=out_fd, stderr=out_fd, pass_fds=passed, start_new_session=True)."""
    for stream in (sys.stdout, sys.stderr):  # (what this command printed is not printed again by the copy)
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    pid = os.fork()
    if pid:
        return ForkedDaemon(args, pid)
    code = 1
    try:
        _become(out_fd, passed, args)
        import runpy

        # as `python -m sessiond.cli.main` runs (by name: this module is below the CLI's entry point)
        runpy.run_module("sessiond.cli.main", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code & 0xFF)
    raise AssertionError("unreachable")


def _become(out_fd: int, passed: list[int], args: list[str]) -> None:
    import io
    import random
    import signal

    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    keep = {0, 1, 2, *passed}
    for name in os.listdir("/proc/self/fd"):  # close_fds: the command's pipes to its caller are not the daemon's
        if int(name) not in keep:
            try:
                os.close(int(name))
            except OSError:
                pass
    for fd in passed:
        os.set_inheritable(fd, True)

    def stream(fd: int, mode: str, old, line: bool):
        return io.TextIOWrapper(
            open(fd, mode, closefd=False), encoding=old.encoding, errors=old.errors, line_buffering=line
        )

    sys.stdin = stream(0, "rb", sys.stdin, False)
    sys.stdout = stream(1, "wb", sys.stdout, False)
    sys.stderr = stream(2, "wb", sys.stderr, True)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (a new program's; the command's own is its)
    random.seed()
    sys.argv = [sys.argv[0], *args]
