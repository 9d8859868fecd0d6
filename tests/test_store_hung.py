"""A store that hangs (accepts connections, never answers): `verify` and `doctor` report it once as
not answering, not each session as damaged, and ask it only once per run instead of waiting out the
timeout for every session."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from conftest import DaemonProc, run_cli, wait_for, write_config
from portalstore import s5, served_portal
from servers.s5portal import Portal, Threaded, make_app
from sessiond.sync.errors import ImportError_


@pytest.fixture
async def portal():
    async with served_portal() as p:
        yield p


async def started_a(devices, portal, tmp_path, timeout: float):
    """Device A of `devices` on the portal, started; its store and its sync give up after `timeout` s."""
    a, _ = await devices.open(store_a=s5(portal, tmp_path, "a", timeout=timeout), a={"timeout": timeout})
    await a.start()
    return a


async def test_verify_asks_a_hung_store_once_and_reports_no_damage(devices, portal, tmp_path):
    timeout = 2.0
    a = await started_a(devices, portal, tmp_path, timeout)
    sids = []
    for i in range(4):
        sid = (await devices.dba.create_session({"name": f"s{i}"}))["id"]
        await devices.dba.append_messages(sid, [{"role": "user", "content": f"hello {i}"}])
        sids.append(sid)
    assert (await a.sync_now(None, wait=True, timeout=20))["complete"]
    portal.faults.hang = asyncio.Event()  # accepts every connection, answers nothing
    t0 = time.monotonic()
    rep = await a.verify()
    took = time.monotonic() - t0
    assert took < 3 * timeout, took  # main: the timeout for each of the four sessions
    assert not rep["ok"] and [s["session"] for s in rep["sessions"]] == await devices.dba.session_ids()
    for s in rep["sessions"]:
        assert "not answering" in s.get("store_failure", "") and portal.authority in s["store_failure"], s
        assert s["damaged"] == [] and "repair" not in s
    assert not a.ctx.repair


def test_doctor_reports_a_hung_store_once_and_no_session_as_damaged(tmp_path):
    p = Portal()
    server = Threaded(make_app(p)).start()
    p.authority = f"127.0.0.1:{server.port}"
    d = DaemonProc(str(tmp_path / "home"), f"s5+http://{p.authority}")
    write_config(d.home, store_timeout=3)  # (the store check waits as long as a store call may take)
    d.start()
    try:
        with d.client() as c:
            sids = [
                c.create_session(name=f"s{i}", initial_messages=[{"role": "user", "content": "hi"}])["id"]
                for i in range(2)
            ]
            wait_for(lambda: c.sync(None, wait=True, timeout=20)["complete"], timeout=40)
        hang = asyncio.Event()
        p.faults.hang = hang
        t0 = time.monotonic()
        res = run_cli(d.home, "doctor", "--json")
        took = time.monotonic() - t0
        rep = json.loads(res.stdout)
        assert res.returncode == 1 and not rep["ok"]
        stores = [f for f in rep["findings"] if f["check"] == "store"]
        verify = [f for f in rep["findings"] if f["check"] == "verify"]
        assert [f["level"] for f in stores] == ["problem"] and "did not answer" in stores[0]["message"]
        assert len(verify) == 1 and verify[0]["level"] == "warn", verify  # main: each session "fails verify"
        assert "2 session(s) not verified" in verify[0]["message"] and all(s in verify[0]["message"] for s in sids)
        assert not any("fails verify" in f["message"] for f in rep["findings"])
        assert took < 3 * 3, took  # the store check's store_timeout (3 s), not 3 s more per session (main: 9)
    finally:
        if p.faults.hang is not None:
            server.loop.call_soon_threadsafe(p.faults.hang.set)
        d.stop()
        server.stop()


async def test_sync_answers_within_its_timeout_while_the_store_hangs(devices, portal, tmp_path):
    """`sync --wait --timeout S` answers within S seconds however the store fails. Before it waits for its
    pushes, a sync asks the store whether it lost this device's log (the repair check), and after them it
    pulls each session: both once went one session after another, each waiting out the store's own
    timeout, so with the store hung a `sessiond sync --wait --timeout 5` of a few sessions answered after
    minutes. Now both are bounded by the time left, and what the deadline cut short goes on in the
    background; the answer says which pulls did not end. A sync that does not wait does not wait for the
    repair check either."""
    store_timeout = 3.0
    a, _ = await devices.open(
        store_a=s5(portal, tmp_path, "a", timeout=store_timeout),
        store_b=s5(portal, tmp_path, "b", timeout=store_timeout),
        a={"timeout": store_timeout},
        b={"timeout": store_timeout},
    )
    await a.start()
    sids = [await devices.shared(f"s{i}", write=True) for i in range(3)]
    assert (await a.sync_now(None, wait=True, timeout=20))["complete"]
    portal.faults.hang = asyncio.Event()  # accepts every connection, answers nothing
    t0 = time.monotonic()
    res = await a.sync_now(None, wait=True, timeout=1)
    took = time.monotonic() - t0
    assert took < 1 + 1.5, took  # main: 27 s, each session checked, then pulled, one by one
    assert not res["complete"]
    for sid in sids:
        assert "did not end within" in res["sessions"][sid]["pull_error"], res["sessions"][sid]
    t0 = time.monotonic()
    res = await a.sync_now(sids[0], wait=False, timeout=60)
    assert time.monotonic() - t0 < 1, time.monotonic() - t0  # main: the repair check's 3 s
    portal.faults.hang.set()  # the store answers again: what waited in the background ends
    portal.faults.hang = None
    assert (await a.sync_now(None, wait=True, timeout=30))["complete"]


async def test_share_while_the_store_hangs_is_a_store_error_not_an_internal_one(devices, portal, tmp_path):
    """A session pushed earlier, shared while the store hangs: the share's push has nothing to send, then
    writing the session's members slot timed out, and the TimeoutError went up to the API as an internal
    error ("sessiond: internal error; see the daemon log", HTTP 500) after a minute. Now it is the share's
    store failure, saying the store does not answer, as when the push itself fails."""
    timeout = 1.0
    a = await started_a(devices, portal, tmp_path, timeout)
    sid = (await devices.dba.create_session({"name": "hung share"}))["id"]
    await devices.dba.append_messages(sid, [{"role": "user", "content": "hello"}])
    assert (await a.sync_now(sid, wait=True, timeout=20))["complete"]
    portal.faults.hang = asyncio.Event()
    with pytest.raises(ImportError_) as err:  # main: TimeoutError
        await a.share(sid, write=True, passphrase=None, expires_in=None)
    assert err.value.kind == "store" and "not answering" in str(err.value) and sid in str(err.value), err.value


async def test_gc_asks_a_hung_store_once_and_nothing_when_nothing_is_due(devices, portal, tmp_path):
    """`sessiond gc` read every session's heads (to know what is still referenced) one session after
    another, each waiting out the store's timeout when it hangs (a home of 30 sessions: more than five
    minutes), and did so even when nothing was due to be freed. Now nothing due asks the store nothing,
    and a store that fails to answer is asked once: the sessions after it keep their objects for that
    reason, reported."""
    timeout = 1.0
    a = await started_a(devices, portal, tmp_path, timeout)
    sids = []
    for i in range(4):
        sid = (await devices.dba.create_session({"name": f"gc{i}"}))["id"]
        for j in range(2):  # the second push lets the first manifest go: a candidate
            await devices.dba.append_messages(sid, [{"role": "user", "content": f"m{j}"}])
            assert (await a.sync_now(sid, wait=True, timeout=20))["complete"]
        sids.append(sid)
    portal.faults.hang = asyncio.Event()
    t0 = time.monotonic()
    rep = await a.gc(grace=3600, dry_run=False)  # nothing let go an hour ago
    assert time.monotonic() - t0 < 0.5 and rep["objects"] == 0 and rep["kept"] >= 4, rep  # main: 4 timeouts
    t0 = time.monotonic()
    rep = await a.gc(grace=0, dry_run=False)
    took = time.monotonic() - t0
    assert took < 4 * timeout, took  # main: each session's heads read, each timing out
    assert rep["objects"] == 0 and rep["kept"] >= 4, rep
    (store,) = rep["stores"]
    assert len(store["errors"]) == 4 and all("not answering" in e for e in store["errors"]), store
