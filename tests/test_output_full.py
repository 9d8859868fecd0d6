"""Standard output redirected to a file on a full disk (`sessiond export ID > backup.json`, `ls --json > f`):
the command says, in one line on standard error, that its output could not be written and why, exit 1; never
a traceback, nor Python's 'Exception ignored' at exit. Skipped where a tmpfs cannot be mounted."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import PY
from test_disk_full_real import fill, small_disk


def _run(home: str, argv: list[str], unbuffered: str, stdout) -> subprocess.CompletedProcess:
    """The CLI run with its standard output `stdout`, buffered as users run it or (unbuffered) as the suite."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run(
        [PY, "-m", "sessiond.cli.main", *argv, "--home", home],
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=env,
        timeout=60,
    )


@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["unbuffered", "buffered"])
@pytest.mark.parametrize("command", [["status"], ["ls"], ["ls", "--json"], ["export", "SID"]])
def test_output_to_a_full_disk_is_said_in_one_line(daemon, command, unbuffered):
    with daemon.client() as c:
        sid = c.create_session(name="s", initial_messages=[{"role": "user", "content": "x" * 20_000}])["id"]
    argv = [sid if a == "SID" else a for a in command]
    with small_disk("256k") as disk:
        fill(os.path.join(disk, "filler"))
        with open(os.path.join(disk, "out"), "wb") as out:
            res = _run(daemon.home, argv, unbuffered, out)
    err = res.stderr.decode(errors="replace")
    assert res.returncode == 1, (res.returncode, err)
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert "standard output" in err and "No space left on device" in err, err


@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["unbuffered", "buffered"])
@pytest.mark.parametrize("command", [["status"], ["ls"], ["ls", "--json"], ["export", "SID"], ["log", "SID"]])
def test_output_into_a_pipe_its_reader_closed_ends_quietly(daemon, command, unbuffered):
    """`sessiond ls | head -1`: the reader gone before the command wrote (its end closed first, so that every
    write meets the closed pipe), without PYTHONUNBUFFERED (as users run it), ended with Python's 'Exception
    ignored ... BrokenPipeError' and exit 120 on main. The reader had what it wanted: exit 0, nothing said."""
    with daemon.client() as c:
        sid = c.create_session(name="s")["id"]
        c.append(sid, "user", "hello")
    argv = [sid if a == "SID" else a for a in command]
    r, w = os.pipe()
    os.close(r)
    try:
        res = _run(daemon.home, argv, unbuffered, w)
    finally:
        os.close(w)
    err = res.stderr.decode(errors="replace")
    assert res.returncode == 0 and err == "", (res.returncode, err)


@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["unbuffered", "buffered"])
@pytest.mark.parametrize("argv", [["--version"], ["--version", "--json"], ["--help"], ["ls", "--help"]])
def test_version_and_help_into_a_pipe_its_reader_closed_end_quietly(tmp_path, argv, unbuffered):
    """`sessiond --version --json | head -c 20`: the version is printed while the arguments are parsed, before
    the command runs where a closed pipe is caught, so it ended in Python's 'Exception ignored ... BrokenPipeError'
    and exit 120 (a traceback, unbuffered). As any command's output: exit 0, nothing said. No daemon needed."""
    r, w = os.pipe()
    os.close(r)
    try:
        res = _run(str(tmp_path), argv, unbuffered, w)
    finally:
        os.close(w)
    err = res.stderr.decode(errors="replace")
    assert res.returncode == 0 and err == "", (res.returncode, err)
