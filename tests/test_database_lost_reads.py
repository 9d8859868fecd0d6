"""Reads once the daemon knows its database file was overwritten in place (`cp backup.db sessions.db` while it
ran): the file then holds neither database whole (the copy's pages under the daemon's WAL and page caches), so a
read that happened not to meet a page the copy lacks answered 200 from that mix (a session, its context), while
another answered database_lost. Once any check has seen the overwrite (a refused write, a checkpoint's guard, a
failed read), every read is refused too; a file deleted or replaced under the daemon is still read, from the
database the daemon holds open (tests/test_database_lost.py). What says so: status, doctor, the log."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import time
from collections.abc import Iterator

from conftest import DaemonProc, cli_json, run_cli
from sessiond.client import ApiError
from test_database_lost import _gone, _made_session


@contextlib.contextmanager
def _copied_over(home: str, tmp_path, messages: int = 0) -> Iterator[tuple[object, str]]:
    """A daemon on `home` with a session of `messages` long messages, a whole database of another home copied over
    its sessions.db in place and the next append refused (the overwrite seen, for good): (its client, the session).
    The daemon is stopped after."""
    other = str(tmp_path / "other")
    _made_session(other)  # a whole database of another home, stopped cleanly: a backup to copy in
    d = DaemonProc(home).start()
    try:
        with d.client() as c:
            sid = c.create_session(name="long")["id"]
            for k in range(0, messages, 100):
                c.append_many(sid, [{"role": "user", "content": f"{k}.{i} " + "x" * 2000} for i in range(100)])
            for _ in range(5):
                # (a copy while one of the daemon's checkpoints runs is taken for its writes, README: copied again)
                shutil.copyfile(os.path.join(other, "sessions.db"), os.path.join(home, "sessions.db"))
                try:
                    c.append(sid, "user", "after the copy")
                except ApiError as exc:
                    if exc.code == "database_lost":
                        break
            assert c.status()["database"]["lost"]["what"] == "overwritten in place"
            yield c, sid
    finally:
        assert d.stop() == 0


def _refusal(call) -> ApiError | None:
    try:
        call()
    except ApiError as exc:
        return exc
    return None


def test_reads_are_refused_once_the_overwrite_is_known(home, tmp_path):
    with _copied_over(home, tmp_path, messages=500) as (c, sid):
        calls = {
            "session": lambda: c.get_session(sid),
            "context": lambda: c.context(sid),
            "sessions": lambda: c.list_sessions(),
            "chats": lambda: c.list_chats(sid),
            "stats": lambda: c.stats(session=sid),
        }
        refusals = {name: _refusal(call) for name, call in calls.items()}
        report = c.doctor()  # doctor still answers: the database named, what it did not check said
    assert all(r is not None and r.code == "database_lost" for r in refusals.values()), refusals
    for r in refusals.values():
        said = r.message if r is not None else ""
        assert "overwritten in place" in said and "read" in said and "sessiond stop" in said, said
        assert "stored" not in said, said  # (a read's refusal, not a write's)
    by = {f["check"]: f for f in report["findings"]}
    assert not report["ok"] and by["database"]["level"] == "problem", report
    assert "overwritten" in by["database"]["message"] and "not checked" in by["push"]["message"], report
    # doctor's fixes name this home's daemon (README, The CLI): pasted as printed, `sessiond stop` in the quoted
    # way stopped the default home's daemon instead
    stop = f"`sessiond stop --home {shlex.quote(home)}`"
    assert stop in by["database"]["fix"] and stop in by["push"]["fix"], report


def test_status_says_the_database_is_lost_and_what_to_do(home, tmp_path):
    # status answered as if nothing had happened (its JSON and the CLI's lines), or, once reads were refused with
    # the file overwritten in place, not at all: only doctor and a refused request said it.
    d = DaemonProc(home).start()
    try:
        with d.client() as c:
            c.create_session(name="kept")
            _gone(home)
            lost = cli_json(home, "status")["database"]["lost"]  # --json
            assert lost["what"] == "deleted" and "sessions.db" in lost["message"], lost
            assert "sessiond stop" in lost["fix"], lost
            said = run_cli(home, "status", check=True).stdout
            assert "database: PROBLEM" in said and "deleted" in said and "sessiond stop" in said, said
            assert "sessions: 1" in said, said  # (deleted: still read, from the database the daemon holds)
    finally:
        assert d.stop() == 0
    d = DaemonProc(home).start()
    try:
        with d.client() as c:
            assert "lost" not in c.status()["database"]  # put back: nothing to say
    finally:
        assert d.stop() == 0
    with _copied_over(home, tmp_path):
        lost = cli_json(home, "status")["database"]["lost"]
        assert lost["what"] == "overwritten in place" and "sessiond stop" in lost["fix"], lost
        said = run_cli(home, "status", check=True).stdout
        assert "database: PROBLEM" in said and "overwritten in place" in said, said
        assert "sessions: not read" in said, said
        # nor is the sync state: "everything pushed" said of what was not read
        assert "sync:     not read" in said and "everything pushed" not in said, said


def test_the_background_loops_say_it_once_not_a_traceback_per_round(home, tmp_path):
    # The follower's round (every poll_interval, 0.25 s) and the clean-up read the database: with reads refused,
    # each round logged 'sync round failed' with a traceback, four times a second, for as long as the daemon ran.
    with _copied_over(home, tmp_path) as (c, _):
        assert c.status()["sync"] == {}  # (answered, with no sync state)
        deadline = time.monotonic() + 1.5  # six rounds of the follower at least
        while time.monotonic() < deadline:
            c.status()  # (the daemon answers meanwhile: its loop turns)
    with open(os.path.join(home, "logs", "sessiond.log")) as f:
        lines = [line for line in f if "sync round failed" in line or "clean-up failed" in line or "traceback" in line]
    said = [line for line in lines if "sessions.db was overwritten in place" in line]
    assert len(lines) <= 2 and len(said) == len(lines) and not any("traceback" in line for line in lines), lines
