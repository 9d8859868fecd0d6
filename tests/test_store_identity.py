"""Credentials in a store URL (a relay's invite, a node's password) are not the store's identity: the
same relay with an invite added is the same store, not a move to another one; same store = same scheme,
host, port and path."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

from conftest import DaemonProc, popen_cli, run_cli
from sessiond.stores import open_store


def test_credentials_are_not_a_store_s_identity():
    from sessiond.stores.urls import same_store, store_identity
    from sessiond.sync.mirrorurls import same_stores

    assert same_store("s5+http://INVITE@127.0.0.1:5050", "s5+http://127.0.0.1:5050/")
    assert same_store("ipfs+http://me:old@node.lan:5001/rpc", "ipfs+http://me:new@node.lan:5001/rpc/")
    assert same_store("s5+https://Portal.Example:443", "s5+https://portal.example")
    assert not same_store("s5+http://127.0.0.1:5050/a", "s5+http://127.0.0.1:5050/b")  # the path is identity
    assert not same_store("s5+http://127.0.0.1:5050", "s5+http://127.0.0.1:5051")
    assert not same_store("s5+http://h", "ipfs+http://h")
    assert same_stores("s5+http://I@h:1\nfile:///tmp/x", "s5+http://h:1\nfile:///tmp/x")
    for url in ("ipfs+http://me:s3cret@127.0.0.1:5001/p", "ipfs+gateway+http://me:s3cret@127.0.0.1:8080"):
        store = open_store(url)
        assert "s3cret" not in store.url and store.url == store_identity(url)
        asyncio.run(store.close())


def test_adding_an_invite_to_the_relay_url_is_not_a_store_move(tmp_path):
    """A device started on an invite-only relay without its invite (registration refused) is started
    again with the invite in the relay's URL: the same relay, so no --change-store is needed, and
    the pushes go through."""
    data = str(tmp_path / "relay")
    proc = popen_cli(
        ["serve", "--listen", "127.0.0.1:0", "--data", data, "--json"],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    d = None
    try:
        info = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        host = info["url"].split("://", 1)[1]
        invite = run_cli(None, "serve", "invite", "--data", data, check=True).stdout.strip()
        d = DaemonProc(str(tmp_path / "home"), f"s5+http://{host}").start()
        c = d.client()
        sid = c.create_session(name="relayed", initial_messages=[{"role": "user", "content": "hi"}])["id"]
        # (a refusal answers the wait at once: the timeout only bounds how long the first push may take to
        # meet it, and 5 s could pass on a busy machine, the answer then without the error)
        res = c.sync(sid, wait=True, timeout=30)
        assert not res["complete"] and "invite" in str(res["sessions"][sid].get("last_error")), res
        c.close()
        d.stop()
        d.store = f"s5+http://{invite}@{host}"
        d.start()  # on main: "this home syncs with the store ..., add --change-store"
        c = d.client()
        assert c.sync(sid, wait=True, timeout=20)["complete"]
        assert len(os.listdir(os.path.join(data, "accounts"))) == 1
        started = run_cli(d.home, "start", "--store", f"s5+http://{invite}@{host}/")
        assert started.returncode == 0 and "already running" in started.stdout, started.stderr
        c.close()
    finally:
        if d is not None:
            d.stop()
        proc.terminate()
        proc.wait(15)
