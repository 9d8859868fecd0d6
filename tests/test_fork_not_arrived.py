"""`fork --at` a message another device wrote that has not arrived here yet (this device has not pulled it)
answered "session S has no message M", and nothing to do: the message is only on its way, and the next
pull brings it. The error now says so, with the `sessiond sync ID --wait` that pulls it; a message id of
this device's own that does not exist is still only named."""

from __future__ import annotations

from conftest import run_cli, write_config


def test_fork_at_a_message_not_pulled_yet_says_to_sync(make_daemon, store_dir):
    url = "file://" + store_dir
    a = make_daemon(url).start()
    b = make_daemon(url)
    write_config(b.home, poll_interval=3600, sync_interval=3600)  # B pulls only when asked
    b.start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="shared")["id"]
    ca.append(sid, "user", "one")
    cb.import_code(ca.share(sid, write=True)["code"])
    later = ca.append(sid, "user", "two")["id"]  # A's, not pulled by B yet
    assert ca.sync(sid, wait=True, timeout=20)["complete"]

    res = run_cli(b.home, "fork", sid, "--at", later)
    assert res.returncode == 1, res.stdout
    assert f"has no message {later!r}" in res.stderr, res.stderr
    assert f"`sessiond sync --home {b.home} {sid} --wait`" in res.stderr, res.stderr

    mine = cb.status()["device_id"] + "-999"
    res = run_cli(b.home, "fork", sid, "--at", mine)
    assert res.returncode == 1 and "sessiond sync" not in res.stderr, res.stderr

    assert run_cli(b.home, "sync", sid, "--wait", check=True).returncode == 0
    assert run_cli(b.home, "fork", sid, "--at", later, check=True).stdout.strip()  # as it said: pulled, then forked
