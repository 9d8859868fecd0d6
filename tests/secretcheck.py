"""Helpers of the tests that look for a store URL's secrets where other local users or logs see them:
invites of a real relay, every file of a home's logs, a process's command line, homes started by the CLI."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator

from conftest import PY, run_cli


def invite(data: str) -> str:
    """A one-time invite of the relay whose data folder is `data` (`sessiond serve invite`)."""
    return subprocess.run(
        [PY, "-m", "sessiond.cli.main", "serve", "invite", "--data", data], capture_output=True, text=True, check=True
    ).stdout.strip()


def logs(home: str) -> str:
    """Every file of the home's logs folder (sessiond.log, daemon.out), as text."""
    out = []
    for root, _, files in os.walk(os.path.join(home, "logs")):
        for f in files:
            out.append(open(os.path.join(root, f), "rb").read().decode(errors="replace"))
    return "\n".join(out)


def cmdline(pid: int) -> str:
    """A process's command line as any local user reads it (ps, /proc/PID/cmdline)."""
    return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")


@contextlib.contextmanager
def homes() -> Iterator[Callable[[str], str]]:
    """Yields make(name): a home path (not made) in a temporary folder; each daemon started there is
    stopped, and the folder removed, at the end."""
    base = tempfile.mkdtemp(prefix="sd-sec-")
    made: list[str] = []

    def make(name: str) -> str:
        made.append(os.path.join(base, name))
        return made[-1]

    try:
        yield make
    finally:
        for h in made:
            run_cli(h, "stop")
        shutil.rmtree(base, ignore_errors=True)
