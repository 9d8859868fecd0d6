"""Two real daemons syncing one shared session through a network store: the loopback S5 portal and
the loopback Kubo node (tests/servers), over real TCP, with `--store s5+http://...` / `ipfs+http://...`."""

from __future__ import annotations

import os
import stat

import pytest

from conftest import wait_for
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


def test_two_daemons_through_kubo(make_daemon, kubo):
    n, url = kubo
    sync_both_ways(make_daemon, url)
    assert n.blocks and n.records
    assert all(m == "POST" for m, _, _ in n.requests)
