"""Two real daemons syncing one shared session through a network store: the loopback S5 portal and
the loopback Kubo node (tests/servers), over real TCP, with `--store s5+http://...` / `ipfs+http://...`."""

from __future__ import annotations

import json
import os
import stat

import pytest

import secretcheck
from conftest import run_cli, wait_for
from servers.kubo import Node, make_rpc_app
from servers.s5portal import Threaded


@pytest.fixture
def kubo():
    n = Node()
    server = Threaded(make_rpc_app(n)).start()
    yield n, f"ipfs+http://127.0.0.1:{server.port}"
    server.stop()


def contents(d, sid):
    return [(m["role"], m["content"]) for m in d.client().messages(sid, limit=100_000)["messages"]]


def sync_both_ways(make_daemon, url):
    a = make_daemon(url).start()
    b = make_daemon(url).start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="net", initial_messages=[{"role": "user", "content": "hello"}])["id"]
    ca.append_many(sid, [{"role": "user", "content": f"a{i}"} for i in range(5)])
    cb.import_code(ca.share(sid, write=True)["code"])
    assert contents(b, sid) == contents(a, sid)
    cb.append(sid, "assistant", "from b")
    wait_for(lambda: contents(a, sid)[-1:] == [("assistant", "from b")], timeout=15)
    ca.append(sid, "user", "from a")
    wait_for(lambda: contents(b, sid)[-1:] == [("user", "from a")], timeout=15)
    return a, b


def test_two_daemons_through_an_s5_portal(make_daemon, portal):
    p, url = portal
    a, b = sync_both_ways(make_daemon, url)
    assert len(p.accounts) == 2  # one account per device, each logged in with its own derived key
    for d in (a, b):
        folder = os.path.join(d.home, "store-tokens")
        (token_file,) = os.listdir(folder)
        assert stat.S_IMODE(os.stat(os.path.join(folder, token_file)).st_mode) == 0o600
        token = open(os.path.join(folder, token_file)).read()
        for log in os.listdir(os.path.join(d.home, "logs")) if os.path.isdir(os.path.join(d.home, "logs")) else []:
            assert token not in open(os.path.join(d.home, "logs", log), errors="replace").read()


def test_kubo_credentials_written_after_the_start_are_used_without_a_restart(make_daemon, tmp_path):
    """A Kubo node that wants credentials, a home with no kubo-auth yet: the pushes are refused, and
    doctor's fix says to write <home>/kubo-auth, chmod 600, then `sessiond sync --wait`. The daemon read
    the file only at its start (and only if it was there), so that sync was refused again and only a
    restart helped. Now a refused request reads the file again (and a changed one is sent once more)."""
    secret = "kubo-S3CRET-late"
    n = Node(auth=f"Bearer {secret}")
    server = Threaded(make_rpc_app(n)).start()
    try:
        d = make_daemon(f"ipfs+http://127.0.0.1:{server.port}").start()
        c = d.client()
        sid = c.create_session(name="late", initial_messages=[{"role": "user", "content": "hello"}])["id"]
        assert not c.sync(sid, wait=True, timeout=10)["complete"]
        report = json.loads(run_cli(d.home, "doctor", "--no-verify", "--json").stdout)
        (store,) = [f for f in report["findings"] if f["check"] == "store"]
        auth = os.path.join(d.home, "kubo-auth")
        assert store["level"] == "problem" and auth in store["fix"] and "sync" in store["fix"], store
        with open(os.open(auth, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(f"Bearer {secret}\n")
        res = c.sync(sid, wait=True, timeout=30)
        assert res["complete"], res  # main: refused again until a restart
        assert n.blocks and n.records
        secretcheck_texts = [json.dumps(c.status()), run_cli(d.home, "doctor", "--json").stdout]
        d.stop()
        secretcheck_texts.append(secretcheck.logs(d.home))
        assert not any(secret in t for t in secretcheck_texts)
    finally:
        server.stop()


def test_two_daemons_through_kubo(make_daemon, kubo):
    n, url = kubo
    sync_both_ways(make_daemon, url)
    assert n.blocks and n.records
    assert all(m == "POST" for m, _, _ in n.requests)


def test_a_homes_kubo_auth_is_what_the_daemon_sends_and_is_shown_nowhere(make_daemon):
    """docs/SECURITY.md: "Kubo RPC credentials are read from <home>/kubo-auth", go only into request headers,
    and are scrubbed from what is shown; doctor checks the file is 0600. Until now only the store class was
    tested with such a file: here a daemon on a node that requires them, its home's file the only place
    they are."""
    secret = "kubo-S3CRET-4d1f"
    n = Node(auth=f"Bearer {secret}")
    server = Threaded(make_rpc_app(n)).start()
    try:
        d = make_daemon(f"ipfs+http://127.0.0.1:{server.port}")
        os.makedirs(d.home, mode=0o700)
        auth = os.path.join(d.home, "kubo-auth")
        with open(os.open(auth, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(f"bearer:{secret}\n")
        d.start()
        c = d.client()
        sid = c.create_session(name="authorized", initial_messages=[{"role": "user", "content": "hello"}])["id"]
        c.sync(sid, wait=True, timeout=30)
        assert n.blocks and n.requests and all(a == f"Bearer {secret}" for _, _, a in n.requests)
        shown = [json.dumps(c.status()), json.dumps(c.doctor(verify=True)), run_cli(d.home, "status").stdout]
        # a wrong one: refused by the node, named with its fix, the secret still nowhere
        with open(auth, "w") as f:
            f.write("bearer:not-the-S3CRET\n")
        os.chmod(auth, 0o644)  # and open to others: doctor names that too
        d.restart()
        report = run_cli(d.home, "doctor", "--json")
        assert report.returncode == 1
        findings = json.loads(report.stdout)["findings"]
        assert any(f["level"] == "problem" and "kubo-auth" in (f["fix"] or "") for f in findings), findings
        assert any(f["level"] == "problem" and f["fix"] == f"chmod 600 {auth}" for f in findings), findings
        shown += [report.stdout, report.stderr, json.dumps(d.client().status())]
        d.stop()
        shown.append(secretcheck.logs(d.home))
        for text in shown:
            assert secret not in text and "not-the-S3CRET" not in text, text[:2000]
    finally:
        server.stop()
