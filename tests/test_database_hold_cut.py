"""A daemon's stop moves aside what was put over its database (a file that is no SQLite database copied over
sessions.db in place: sessions.db.overwritten-hold.PID) or over its WAL (sessions.db-wal.put-hold.PID) while its
connections close, and puts it back after: a kill in between (the service manager's stop timeout, a crash) left
it under that name, which only the log line said, and the next start found no sessions.db. The start and doctor
name it now, as they name put_back's cut copies, with the way to put it back."""

from __future__ import annotations

import json
import os
import re

import pytest

from conftest import DaemonProc, run_cli
from test_database_overwritten import acknowledged

CRASH = {"SESSIOND_CRASH_AT": "close:held_aside"}  # the stop killed with the files moved aside, not put back


def test_a_copy_moved_aside_by_a_stop_a_kill_cut_short_is_named_and_can_be_put_back(home):
    db = os.path.join(home, "sessions.db")
    d = DaemonProc(home, env=CRASH).start()
    with d.client() as c:
        acknowledged(c, "running")
    size = os.path.getsize(db)
    notes = b"these are my notes, not a database\n"
    with open(db, "r+b") as f:  # in place: the same inode, no SQLite database in it
        f.write((notes * (size // len(notes) + 1))[:size])
    with open(db, "rb") as f:
        mine = f.read()
    assert d.stop() == 137  # killed with the notes moved aside
    held = re.compile(r"sessions\.db\.overwritten-hold\.\d+")
    (hold,) = [os.path.join(home, n) for n in os.listdir(home) if held.fullmatch(n)]
    assert not os.path.exists(db)
    findings = json.loads(run_cli(home, "doctor", "--json").stdout)["findings"]
    (f,) = [f for f in findings if hold in f["message"]]
    assert f["level"] == "warn" and f"mv {hold} {db}" in f["fix"], f
    with pytest.raises(RuntimeError) as refused:  # the database missing, its sessions' keys here: refused
        DaemonProc(home).start()
    assert f"mv {hold} {db}" in str(refused.value), refused.value
    os.rename(hold, db)  # what the fix says
    with open(db, "rb") as f:
        assert f.read() == mine  # the user's file, as it was put there
