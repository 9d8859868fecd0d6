"""What a daemon's start and the key commands do with a home in a bad state: a damaged or lost device key,
a sessions.db written by a newer sessiond or damaged, two starts at once. Each is refused (or repaired)
with one line that names the file, what is wrong and what to do; never a traceback, never a fork."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import stat
import subprocess

from conftest import PY, DaemonProc, cli_json, run_cli
from sessiond.storage.schema import SCHEMA_VERSION
from sessiond.sync.keys import mnemonic_to_seed


def _one_clear_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_a_database_of_a_newer_sessiond_is_refused_in_one_line(home):
    DaemonProc(home).start().stop()
    db = os.path.join(home, "sessions.db")
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:  # closed: the change is in the file itself
        conn.execute("UPDATE schema_version SET version=?", (SCHEMA_VERSION + 1,))
    with open(db, "rb") as f:
        before = f.read()
    for cmd in (["start"], ["daemon"]):
        line = _one_clear_line(run_cli(home, *cmd))
        assert db in line and "newer sessiond" in line and "upgrade sessiond" in line, line
    with open(db, "rb") as f:
        assert f.read() == before
    doctor = run_cli(home, "doctor", "--json")
    found = [f for f in cli_json_of(doctor)["findings"] if f["check"] == "database"]
    assert [f["level"] for f in found] == ["problem"], found
    assert "newer" in found[0]["message"] and "upgrade" in found[0]["fix"], found


def cli_json_of(res: subprocess.CompletedProcess) -> dict:
    import json

    assert "Traceback" not in res.stderr, res.stderr
    return json.loads(res.stdout)


def test_a_damaged_database_is_refused_in_one_line(home):
    DaemonProc(home).start().stop()
    db = os.path.join(home, "sessions.db")
    good = db + ".good"
    shutil.copyfile(db, good)
    doctor = cli_json_of(run_cli(home, "doctor", "--json"))
    assert [f["level"] for f in doctor["findings"] if f["check"] == "database"] == ["ok"], doctor
    for damage in ("truncated", "not a database"):
        with open(good, "rb") as f:
            data = f.read()
        with open(db, "wb") as f:
            f.write(data[:3000] if damage == "truncated" else b"these are not the bytes of a database\n" * 50)
        for cmd in (["start"], ["daemon"]):
            line = _one_clear_line(run_cli(home, *cmd))
            assert db in line and "damaged" in line, line
            assert "backup" in line and "doctor" in line, line
        doctor = cli_json_of(run_cli(home, "doctor", "--json"))
        found = [f for f in doctor["findings"] if f["check"] == "database"]
        assert [f["level"] for f in found] == ["problem"], (damage, found)
        assert db in found[0]["message"] and "damaged" in found[0]["message"], found
        assert not doctor["ok"]
