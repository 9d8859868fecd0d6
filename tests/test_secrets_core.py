"""A crash writes no core file holding keys: the daemon (device key, session keys, write secrets, a provider's
API key while a request needs it) and the relay (login tokens while they are checked) turn core dumps off at
start, whatever limit the shell that started them allowed (`ulimit -c unlimited`)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess

import pytest

from conftest import PY, relay_served, run_cli, wait_for

pytestmark = pytest.mark.real_exec  # the processes must inherit this test's core limit, as from a shell


def core_limit(pid: int) -> str:
    """The soft 'Max core file size' of a process, as /proc/PID/limits shows it ('0', 'unlimited', ...)."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max core file size"):
                return line.split()[4]
    raise AssertionError(f"no core limit in /proc/{pid}/limits")


def cores_allowed() -> None:
    """This process (and so what it starts) may dump cores as large as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard == 0:
        pytest.skip("core dumps are off for this user (hard limit 0): nothing to turn off")
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


@pytest.fixture
def core_limit_restored():
    before = resource.getrlimit(resource.RLIMIT_CORE)
    yield
    resource.setrlimit(resource.RLIMIT_CORE, before)


def test_a_crashed_daemon_leaves_no_core_file_with_its_keys(tmp_path, core_limit_restored):
    cores_allowed()
    home, cwd = str(tmp_path / "home"), tmp_path / "cwd"
    cwd.mkdir()
    started = subprocess.run(  # `sessiond start` from a folder of the user's, as from a shell there
        [PY, "-m", "sessiond.cli.main", "start", "--home", home, "--store", "file://" + str(tmp_path / "store")],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 0, started.stderr
    pid = json.loads(run_cli(home, "status", "--json", check=True).stdout)["pid"]
    try:
        assert core_limit(pid) == "0"  # main: 'unlimited', the shell's
    finally:
        os.kill(pid, signal.SIGSEGV)  # a crash: the kernel writes a core if the limit lets it
    wait_for(lambda: not os.path.exists(f"/proc/{pid}/limits"), timeout=30, what="the crashed daemon gone")
    key = open(os.path.join(home, "keys", "device.key"), "rb").read()
    for folder in (cwd, tmp_path / "home"):
        for name in os.listdir(folder):  # a core goes where the process runs (the kernel's core_pattern "core")
            if not os.path.isfile(os.path.join(folder, name)):
                continue
            with open(os.path.join(folder, name), "rb") as f:
                assert key not in f.read(), f"{name} in {folder} holds the device key"


def pids_serving(data: str) -> list[int]:
    """The processes whose command line is a `sessiond serve` of the data folder `data`."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"serve" in args and data.encode() in args:
            found.append(int(name))
    return found


def test_the_relay_turns_core_dumps_off(tmp_path, core_limit_restored):
    cores_allowed()
    data = str(tmp_path / "relay")
    with relay_served(data):
        (pid,) = pids_serving(data)
        assert core_limit(pid) == "0"  # main: the limit of the process that started it
