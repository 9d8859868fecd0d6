"""`sync --wait` on a device whose relay stopped answering names that relay in the pull's error: the pull
had not failed yet (its requests to the relay still being tried again), so the error came from the push's
failure, and read "the store None is unreachable" for a session that syncs through the daemon's own store
(its `store_url` None)."""

from __future__ import annotations

import json

from conftest import relay_served, run_cli


def test_sync_wait_names_the_relay_not_none(make_daemon, tmp_path):
    with relay_served(str(tmp_path / "relay"), "--open-registration") as info:
        url = info["url"]
        a = make_daemon(url).start()
        b = make_daemon(url).start()
        ca, cb = a.client(), b.client()
        sid = ca.create_session(name="through a relay")["id"]
        ca.append(sid, "user", "before the relay stops")
        cb.import_code(ca.share(sid, write=True)["code"])
        assert cb.sync(sid, wait=True, timeout=20)["complete"]
    # the relay stopped: b writes, and its sync waits on both its push and its pull
    cb.append(sid, "user", "while the relay is down")
    res = run_cli(b.home, "sync", sid, "--wait", "--timeout", "3", "--json")
    assert res.returncode != 0, res.stdout
    said = json.loads(res.stdout)["sessions"][sid]
    assert "None" not in said.get("pull_error", ""), said
    assert "None" not in said.get("last_error", ""), said
    assert f"the store {url} is unreachable" in said["pull_error"], said
