"""The session features at their edges, through the API and the CLI of a real daemon: limits a status change
must keep, forks of chats that compacted, and the ways out an error names working as written."""

from __future__ import annotations

import os
import shlex

import pytest

from conftest import DaemonProc, cli_json, run_cli
from sessiond.client import ApiError


def _limited(home: str, config: str) -> DaemonProc:
    os.makedirs(home, mode=0o700)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write(config)
    return DaemonProc(home).start()


def test_resume_keeps_the_active_session_limits(home):
    # paused sessions do not count as active; resuming one is making it active again, so it must fit the
    # limits as a new one would, or pause-create-resume walks past them
    d = _limited(home, "max_active_sessions = 2\nmax_active_sessions_per_user = 1\n")
    try:
        c = d.client()
        a = c.create_session(user="ann")["id"]
        c.pause(a)
        b = c.create_session(user="ann")["id"]
        with pytest.raises(ApiError) as e:
            c.resume(a)
        assert e.value.status == 429 and e.value.code == "limit_reached" and "per_user" in e.value.message
        assert c.get_session(a)["status"] == "paused"  # refused: nothing changed
        c.pause(b)
        assert c.resume(a)["status"] == "active"  # room again
        other = c.create_session(user="bob")["id"]  # the daemon's two
        c.pause(other)
        c.create_session()
        res = run_cli(home, "resume", other)
        assert res.returncode != 0 and "max_active_sessions" in res.stderr, res.stderr
        assert c.get_session(other)["status"] == "paused"
        c.end(other)  # ending a paused session is not a resume: no limit to pass
        assert c.get_session(other)["status"] == "ended"
    finally:
        d.stop()
