"""`sync --wait` whose store answers with a failure (a folder store whose folder went: unreachable) says
that failure for the pull as it does for the push, not that the pull "did not end within the sync's
timeout (the store is slow or not answering)": the push's wait used the time, the store was not slow."""

from __future__ import annotations

import json
import os

from conftest import run_cli, write_config


def test_sync_wait_says_the_store_s_error_for_the_pull_not_a_timeout(make_daemon, tmp_path):
    mount = tmp_path / "mnt"
    mount.mkdir()
    store, away = str(mount / "store"), str(tmp_path / "away")
    a = make_daemon(f"file://{store}")
    write_config(a.home, push_delay=3600)  # only an asked sync pushes
    a.start()
    c = a.client()
    sid = c.create_session(name="on a share")["id"]
    c.append(sid, "user", "before the unmount")
    assert c.sync(sid, wait=True, timeout=10)["complete"]
    b = make_daemon(f"file://{store}").start()
    b.client().import_code(c.share(sid)["code"])  # another device on it: a's sync pulls too
    os.rename(store, away)  # the share unmounted
    c.append(sid, "user", "while unmounted")

    res = run_cli(a.home, "sync", sid, "--wait", "--timeout", "3", "--json")
    assert res.returncode != 0, res.stdout
    said = json.loads(res.stdout)["sessions"][sid]
    assert f"the store folder {store} is missing" in said["last_error"], said
    assert "did not end within" not in said["pull_error"], said
    assert f"the store file://{store} is unreachable" in said["pull_error"], said
    assert f"the store folder {store} is missing" in said["pull_error"], said

    text = run_cli(a.home, "sync", sid, "--wait", "--timeout", "3")
    assert text.returncode != 0
    assert "did not end within" not in text.stdout + text.stderr, text.stdout
    assert "cannot pull: the store" in text.stdout + text.stderr, text.stdout
