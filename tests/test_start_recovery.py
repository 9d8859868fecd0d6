"""What a daemon settles at its start, before its socket serves: sessions that expired while no daemon ran
are ended (or deleted) as the running clean-up ends them, and an import from a file that a kill -9 cut
short is rolled back whole."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from conftest import PY, run_cli, wait_for, write_config
from sessiond.client import ClientError

NO_CLEANUP = 0  # no clean-up loop (it would end the session at its expiry): only the start can have expired it


def _expired_while_stopped(make_daemon, **settings):
    """A daemon with one session that expires while the daemon is stopped; returns (daemon, session id,
    checkpoints it had). The daemon is stopped."""
    d = make_daemon()
    write_config(d.home, cleanup_interval=NO_CLEANUP, **settings)
    d.start()
    c = d.client()
    sid = c.create_session(name="short-lived")["id"]
    c.append(sid, "user", "hello")
    # its expiry set once it has its message: made to expire in a second, a slow append met it (refused)
    expires = c.update_session(sid, expires_in=1)["expires_at"]
    before = len(c.checkpoints(sid)["checkpoints"])
    assert c.get_session(sid)["status"] == "active"
    d.stop()
    wait_for(lambda: time.time() > expires + 0.1, timeout=10, what="the session's expiry")
    return d, sid, before


def test_a_session_that_expired_while_stopped_is_ended_before_the_first_request(make_daemon):
    d, sid, before = _expired_while_stopped(make_daemon)
    d.start()
    c = d.client()
    session = c.get_session(sid)
    assert session["status"] == "ended", session
    with pytest.raises(ClientError) as exc:
        c.append(sid, "user", "too late")
    assert exc.value.status == 409, exc.value
    # ended as the clean-up ends it: with its final checkpoint, and that end pushed
    assert len(c.checkpoints(sid)["checkpoints"]) == before + 1
    assert c.sync(sid, wait=True, timeout=30)["complete"]
    assert [m["content"] for m in c.messages(sid)["messages"]] == ["hello"]


def test_with_delete_expired_it_is_gone_before_the_first_request(make_daemon):
    d, sid, _ = _expired_while_stopped(make_daemon, delete_expired=True)
    d.start()
    c = d.client()
    with pytest.raises(ClientError) as exc:
        c.get_session(sid)
    assert exc.value.status == 404, exc.value
    assert sid not in [s["id"] for s in c.list_sessions()["sessions"]]


def test_an_import_from_a_file_killed_part_way_leaves_nothing(make_daemon, tmp_path):
    """kill -9 of the daemon in the middle of `sessiond import-file`: at the next start none of the
    file's sessions is there (nor served, nor pushed later), and the import can be run again."""
    total = 30_000  # six append batches of daemon/formats.py
    path = tmp_path / "long.json"
    path.write_text(
        json.dumps([{"role": ("user", "assistant")[i % 2], "content": f"message {i}"} for i in range(total)])
    )
    flag = tmp_path / "paused"
    d = make_daemon(env={"SESSIOND_TEST_PAUSE": f"import-file.batch:{flag}"}).start()
    c = d.client()
    kept = c.create_session(name="kept")["id"]
    c.append(kept, "user", "stays")
    imp = subprocess.Popen(
        [PY, "-m", "sessiond.cli.main", "import-file", str(path), "--format", "openai", "--home", d.home],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    def midway() -> bool:
        """The import has written part of the file: the daemon paused after a batch (the test hook), or
        (without it) a session of the file holds some of its messages and not all."""
        if flag.exists():
            return True
        for s in c.list_sessions()["sessions"]:
            if s["id"] != kept:
                try:
                    n = c.get_session(s["id"])["message_count"]
                except ClientError:
                    continue
                return 0 < n < total
        return False

    try:
        wait_for(midway, timeout=60, interval=0.01, what="the import part-way")
        d.kill()  # SIGKILL: the import is cut short
    finally:
        imp.communicate(timeout=60)
    assert imp.returncode != 0
    d.start()
    c = d.client()
    assert [s["id"] for s in c.list_sessions()["sessions"]] == [kept]
    assert [m["content"] for m in c.messages(kept)["messages"]] == ["stays"]
    d.stop()
    # the import runs again, whole, once nothing pauses it
    d.env.pop("SESSIOND_TEST_PAUSE")
    d.start()
    res = run_cli(d.home, "import-file", str(path), "--format", "openai", "--json", timeout=300)
    assert res.returncode == 0, res.stderr
    (made,) = json.loads(res.stdout)["sessions"]
    assert made["message_count"] == total
    d.restart()  # a finished import is not rolled back
    assert d.client().get_session(made["id"])["message_count"] == total
