"""A home on a file system mounted read-only (a disk remounted so after errors, a backup mounted to look at):
`start` and `daemon` refuse in one line naming the file they could not write and why, never a traceback nor
Python's 'Exception ignored'. Skipped where a tmpfs cannot be mounted."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import run_cli
from test_disk_full_real import small_disk


@pytest.mark.parametrize("command", ["start", "daemon"])
def test_a_start_on_a_read_only_home_says_so_in_one_line(command):
    with small_disk("4m") as disk:
        home = os.path.join(disk, "home")
        run_cli(home, "start", check=True)
        run_cli(home, "stop", check=True)
        subprocess.run(["mount", "-o", "remount,ro", disk], check=True)
        res = run_cli(home, command, timeout=60)
    err = res.stderr
    assert res.returncode != 0, (res.returncode, err)
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Read-only file system" in err and home in err, err


def test_doctor_on_a_read_only_home_says_so_not_that_the_database_is_damaged():
    """doctor with no daemon opened sessions.db with mode=ro, which SQLite cannot for a WAL database on a read-only
    file system ('unable to open database file'): it called the database damaged and said to move it aside. It
    names the read-only file system (the reason no daemon can start there) and checks the database all the same."""
    with small_disk("4m") as disk:
        home = os.path.join(disk, "home")
        run_cli(home, "start", check=True)
        run_cli(home, "stop", check=True)
        subprocess.run(["mount", "-o", "remount,ro", disk], check=True)
        res = run_cli(home, "doctor", "--json", timeout=60)
    import json

    findings = json.loads(res.stdout)["findings"]
    said = {f["check"]: f for f in findings}
    assert "damaged" not in said["database"]["message"] and said["database"]["level"] == "ok", findings
    ro = [f for f in findings if "read-only" in f["message"]]
    assert ro and ro[0]["level"] == "problem" and "remount" in (ro[0]["fix"] or ""), findings
