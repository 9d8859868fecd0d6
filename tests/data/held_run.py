"""A test run by tests/test_smalls24.py in a pytest of its own, which it then kills (not collected by the suite:
no test_ prefix). It starts a daemon (from the fork server, as the suite does), says where things are in the
file HELD_RUN_PIDS names, and waits there for the outer test (at most 120 s)."""

from __future__ import annotations

import json
import os

import conftest
from conftest import wait_for


def test_held(make_daemon):
    d = make_daemon().start()
    server = conftest._fork_server()
    assert server is not None and d.proc is not None, "no fork server here: nothing to test"
    said = {"zygote": server.proc.pid, "daemon": d.proc.pid, "worker": os.getpid(), "home": d.home}
    out = os.environ["HELD_RUN_PIDS"]
    with open(out + ".tmp", "w") as f:
        json.dump(said, f)
    os.rename(out + ".tmp", out)
    wait_for(lambda: os.path.exists(out + ".go"), timeout=120, what="the outer test to let go")
