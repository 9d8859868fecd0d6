"""A store that fails (unreachable, credentials refused, server errors, rate-limiting) says nothing about
a session: import, verify and a pull report the store as failing (which class, which store, what to
do), never the session as missing from it or damaged in it."""

from __future__ import annotations

import socket

import pytest

from portalstore import s5, served_portal
from servers.kubo import Node, make_rpc_app
from servers.s5portal import Portal, Threaded, make_app
from sessiond.sync.errors import ImportError_


def free_port() -> int:
    """A loopback port nothing listens on (bound, then closed: connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def portal():
    async with served_portal() as p:
        yield p


async def a_shared_code(devices) -> tuple[str, str]:
    """A session of A (folder store) and its share code."""
    a, _ = await devices.open()
    await a.start()
    sid = (await devices.dba.create_session({"name": "shared"}))["id"]
    await devices.dba.append_messages(sid, [{"role": "user", "content": "hello"}])
    return sid, (await a.share(sid, write=False, passphrase=None, expires_in=None))["code"]


async def test_import_from_a_store_that_fails_names_the_failure_not_a_missing_session(devices):
    sid, code = await a_shared_code(devices)
    kubo = Threaded(make_rpc_app(Node(auth="Bearer not-ours"))).start()
    portal = Portal()
    portal.faults.status, portal.faults.times = 500, 10**6
    broken = Threaded(make_app(portal)).start()
    try:
        for url, kind in (
            (f"s5+http://127.0.0.1:{free_port()}", "unreachable"),
            (f"ipfs+http://127.0.0.1:{kubo.port}", "refusing our credentials"),
            (f"s5+http://127.0.0.1:{broken.port}", "failing with server errors"),
        ):
            with pytest.raises(ImportError_) as err:
                await devices.b.import_code(code, None, url)
            msg = str(err.value)
            assert err.value.kind == "store", (url, msg)  # main: "missing", "does not hold session"
            assert kind in msg and url in msg and "does not hold" not in msg, msg
            assert await devices.dbb.session_ids() == []
    finally:
        kubo.stop()
        broken.stop()


async def test_an_import_whose_hinted_store_fails_says_so(devices, portal, tmp_path):
    store_a = s5(portal, tmp_path, "a")
    a, b = await devices.open(store_a=store_a)
    await a.start()
    sid = (await devices.dba.create_session({"name": "on a portal"}))["id"]
    await devices.dba.append_messages(sid, [{"role": "user", "content": "hello"}])
    code = (await a.share(sid, write=False, passphrase=None, expires_in=None))["code"]
    portal.faults.status, portal.faults.times = 503, 10**6  # B's own folder lacks it; the portal hint fails
    with pytest.raises(ImportError_) as err:
        await b.import_code(code, None)
    assert err.value.kind == "store", err.value  # main: store_needed, "neither ... hold it"
    assert portal.authority in str(err.value) and "rate-limiting us" in str(err.value), err.value


async def test_verify_and_pull_report_a_store_refusing_credentials_as_failing_not_damaged(devices, portal, tmp_path):
    a, b = await devices.open(store_a=s5(portal, tmp_path, "a"), store_b=s5(portal, tmp_path, "b"))
    await a.start()
    sid = (await devices.dba.create_session({"name": "followed"}))["id"]
    await devices.dba.append_messages(sid, [{"role": "user", "content": "hello"}])
    code = (await a.share(sid, write=False, passphrase=None, expires_in=None))["code"]
    await b.import_code(code, None)
    await devices.dba.append_messages(sid, [{"role": "user", "content": "more"}])
    assert (await a.sync_now(sid, wait=True, timeout=10))["complete"]
    portal.faults.reject_tokens = True  # reads of objects need the account: refused, even after a fresh login
    rep = await a.verify(sid)
    (s,) = rep["sessions"]
    assert not rep["ok"] and "refusing our credentials" in s.get("store_failure", ""), s  # main: "damaged"
    assert s["damaged"] == [] and "repair" not in s and sid not in a.ctx.repair
    with pytest.raises(ImportError_) as err:
        await b.pull(sid)
    assert err.value.kind == "store" and "refusing our credentials" in str(err.value), err.value  # main: damaged
