"""A database deleted (or replaced) under a running daemon is written back at its stop through a temporary file
(sessions.db.PID.tmp, or sessions.db.held-TIME.PID.tmp beside a replacement) renamed into place: a kill during
that write left the temporary file, which may hold the only copy of the database, and nothing named it. It is
never deleted; the start (its refusal, or its log) and doctor name it, say what it is and what to do with it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3

import pytest

from conftest import DaemonProc, run_cli

CRASH = {"SESSIOND_CRASH_AT": "put_back:written"}  # the stop killed with the copy written, not renamed


def _copies(home: str, pattern: str) -> list[str]:
    return [os.path.join(home, n) for n in os.listdir(home) if re.fullmatch(pattern, n)]


def _named(findings: list[dict], copy: str) -> dict:
    (f,) = [f for f in findings if copy in f["message"]]
    assert f["level"] == "warn" and "only copy" in f["message"] and "leaves it" in f["message"], f
    assert f"mv {copy} " in f["fix"] and "sessiond stop" in f["fix"], f
    return f


def _made(home: str) -> tuple[DaemonProc, str]:
    d = DaemonProc(home, env=CRASH).start()
    with d.client() as c:
        sid = c.create_session(name="kept")["id"]
        c.append(sid, role="user", content="acknowledged")
    return d, sid


def test_a_deleted_database_whose_write_back_a_kill_cut_short_is_named_kept_and_can_be_put_back(home):
    d, sid = _made(home)
    for name in ("sessions.db", "sessions.db-wal", "sessions.db-shm"):
        if os.path.exists(os.path.join(home, name)):
            os.unlink(os.path.join(home, name))
    assert d.stop() == 137  # killed writing it back
    (copy,) = _copies(home, r"sessions\.db\.\d+\.tmp")
    res = run_cli(home, "doctor", "--json")  # no daemon: the home's files
    f = _named(json.loads(res.stdout)["findings"], copy)
    assert "whole database (1 session)" in f["message"], f
    with pytest.raises(RuntimeError) as refused:  # the database missing, its sessions' keys here: refused
        DaemonProc(home).start()
    assert copy in str(refused.value) and f"mv {copy} " in str(refused.value), refused.value
    assert os.path.exists(copy)  # left where it is
    os.rename(copy, os.path.join(home, "sessions.db"))  # what the fix says
    d = DaemonProc(home).start()
    try:
        with d.client() as c:
            assert [m["content"] for m in c.messages(sid)["messages"]] == ["acknowledged"]
            assert not [f for f in c.doctor(verify=False)["findings"] if f["level"] != "ok" and ".tmp" in f["message"]]
    finally:
        assert d.stop() == 0


def test_a_replaced_database_whose_copy_beside_it_a_kill_cut_short_is_named_at_start_and_by_doctor(home):
    d, sid = _made(home)
    db = os.path.join(home, "sessions.db")
    other = os.path.join(home, "other.db")
    with contextlib.closing(sqlite3.connect(db)) as src, contextlib.closing(sqlite3.connect(other)) as dst:
        src.backup(dst)  # a backup of it, put in its place
    os.rename(other, db)
    for name in ("sessions.db-wal", "sessions.db-shm"):
        if os.path.exists(os.path.join(home, name)):
            os.unlink(os.path.join(home, name))
    assert d.stop() == 137  # killed writing the held database beside it
    (copy,) = _copies(home, r"sessions\.db\.held-\d{8}T\d{6}\.\d+\.tmp")
    _named(json.loads(run_cli(home, "doctor", "--json").stdout)["findings"], copy)
    d = DaemonProc(home).start()
    try:
        with open(os.path.join(home, "logs", "sessiond.log")) as f:
            said = [json.loads(line) for line in f if copy in line]
        assert said and said[-1]["level"] == "warning" and "only copy" in said[-1]["msg"], said
        assert f"mv {copy} " in said[-1]["msg"], said
        with d.client() as c:
            _named(c.doctor(verify=False)["findings"], copy)
    finally:
        assert d.stop() == 0
    assert os.path.exists(copy)  # a start and a stop later, still where it was
