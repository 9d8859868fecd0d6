"""kill -9 of a daemon whose mirror has a store down (its writes wait in that store's durable outbox,
storage/outbox.py), while appends are acknowledged, and again while the outbox drains once the store is
back: after the restarts the store that was down gets every acknowledged message once, a device reading it
alone has each of them exactly once, the outbox is empty, and verify and doctor are clean."""

from __future__ import annotations

import contextlib

import pytest

from conftest import cli_json, run_cli, wait_for
from killing import calls, killed_while, progressing
from sessiond.client import Client
from sessiond.stores.s5 import S5Store
from test_mirror import Relay, head_revision, stores_of


def _contents(d, sid: str) -> list[str]:
    return [m["content"] for m in d.client().messages(sid, limit=100_000)["messages"]]


@pytest.fixture
def relay(tmp_path):
    r = Relay(str(tmp_path / "relay")).start()
    yield r
    r.close()


def _append_while_killed(d, sid: str, kills: int) -> list[str]:
    """Appends to `sid` on `d` while `d` is killed (SIGKILL) `kills` times at random moments and started
    again; returns the acknowledged ones."""
    acked: list[str] = []
    errors: list[BaseException] = []

    def append(c: Client, i: int) -> None:
        c.append(sid, "user", f"m{i}")
        acked.append(f"m{i}")

    work = [lambda stop: calls(d.home, append, stop, errors)]
    killed_while(work, [d], kills, lo=0.1, between=progressing(acked, errors))
    assert not errors, errors
    return acked


def _clean(d) -> bool:
    res = run_cli(d.home, "verify", "--json")
    return res.returncode == 0 and run_cli(d.home, "doctor", "--json").returncode == 0


def test_writes_waiting_for_a_store_that_is_down_survive_kill_9_and_reach_it_once(make_daemon, store_dir, relay):
    folder = "file://" + store_dir
    a = make_daemon([folder, relay.url]).start()
    ca = a.client()
    sid = ca.create_session(name="outbox")["id"]
    ca.append(sid, "user", "before")
    assert ca.sync(sid, wait=True, timeout=30)["complete"]
    code = ca.share(sid)["code"]

    relay.stop()  # down: what a pushes waits in the relay's outbox
    acked = ["before"] + _append_while_killed(a, sid, kills=4)
    assert len(acked) >= 1 + 4  # one acknowledged a kill at least (however slow the machine)
    assert a.client().sync(sid, wait=True, timeout=30)["complete"]  # (the folder took it: the push is done)
    wait_for(lambda: stores_of(a)[relay.url]["pending"] > 0, what="the relay's outbox holds the writes")

    a.kill()
    relay.start()  # back: the outbox drains at a's start, and a is killed part-way through
    a.env["SESSIOND_CRASH_AT"] = "outbox:sent"  # sent to the store, the rows not yet deleted
    with contextlib.suppress(RuntimeError):  # (killed before or after it said it was ready)
        a.start()
    assert a.proc.wait(20) == 137
    a.env.pop("SESSIOND_CRASH_AT")
    a.start()
    wait_for(lambda: stores_of(a)[relay.url]["pending"] == 0, timeout=15, what="the relay caught up")
    assert head_revision(S5Store(relay.url), a, sid) == a.client().status()["sync"][sid]["head_rev"]

    mine = _contents(a, sid)
    assert len(mine) == len(set(mine)) and set(acked) <= set(mine)  # nothing lost, nothing twice
    wait_for(lambda: _clean(a), timeout=20, what="verify and doctor clean on a")

    b = make_daemon(relay.url).start()  # a device that reads the relay alone
    b.client().import_code(code)
    theirs = _contents(b, sid)
    assert theirs == mine
    assert cli_json(b.home, "verify")["ok"]


def test_appends_made_while_the_only_store_is_down_survive_kill_9_and_are_pushed_once_it_is_back(make_daemon, relay):
    """The same with one store, the relay, and no outbox: what waits for it is the log not pushed yet."""
    a = make_daemon(relay.url).start()
    ca = a.client()
    sid = ca.create_session(name="down")["id"]
    ca.append(sid, "user", "before")
    assert ca.sync(sid, wait=True, timeout=30)["complete"]
    code = ca.share(sid, write=True)["code"]
    b = make_daemon(relay.url).start()
    b.client().import_code(code)

    relay.stop()
    acked = ["before"] + _append_while_killed(a, sid, kills=4)
    relay.start()
    a.kill()  # and killed once more as its pushes start again
    a.start()
    assert a.client().sync(sid, wait=True, timeout=30)["complete"]
    mine = _contents(a, sid)
    assert len(mine) == len(set(mine)) and set(acked) <= set(mine)
    wait_for(lambda: _clean(a), timeout=20, what="verify and doctor clean on a")

    def converged() -> bool:
        b.client().sync(sid, wait=True, timeout=10)
        return _contents(b, sid) == mine

    wait_for(converged, timeout=30, what="b has every message a acknowledged, once")
    b.client().append(sid, "user", "from b")
    wait_for(lambda: a.client().sync(sid, wait=True, timeout=10) and _contents(a, sid)[-1] == "from b", timeout=30)
    assert cli_json(b.home, "verify")["ok"]


def test_two_devices_on_a_mirror_whose_relay_comes_and_goes_killed_at_random_converge_and_the_relay_has_it_all(
    make_daemon, store_dir, relay
):
    """Both devices on a folder and a relay; the relay stopped and started, and the devices killed, at random
    moments of appends from both: once the relay is back for good, the devices converge on every
    acknowledged message once, and a device reading the relay alone has the same."""
    folder = "file://" + store_dir
    a, b = make_daemon([folder, relay.url]).start(), make_daemon([folder, relay.url]).start()
    sid = a.client().create_session(name="flapping")["id"]
    code = a.client().share(sid, write=True)["code"]
    b.client().import_code(code)
    acked: list[str] = []
    errors: list[BaseException] = []

    def appender(name: str, d):
        def append(c: Client, i: int) -> None:
            c.append(sid, "user", f"{name}{i}")
            acked.append(f"{name}{i}")

        return lambda stop: calls(d.home, append, stop, errors)

    def flap(k: int, rnd) -> None:  # the relay goes, or comes back, before every third kill
        if k % 3 == 0:
            relay.stop() if relay.proc is not None and relay.proc.poll() is None else relay.start()

    killed_while([appender("a", a), appender("b", b)], [a, b], 8, lo=0.1, between=flap)
    assert not errors, errors
    if relay.proc is None or relay.proc.poll() is not None:
        relay.start()
    for d in (a, b):
        d.client().sync(sid, wait=True, timeout=30)

    def converged() -> bool:
        logs = []
        for d in (a, b):
            d.client().sync(sid, wait=True, timeout=10)
            logs.append(_contents(d, sid))
        return logs[0] == logs[1] and set(acked) <= set(logs[0])

    wait_for(converged, timeout=30, what="both devices have every acknowledged message")
    mine = _contents(a, sid)
    assert len(mine) == len(set(mine))
    for d in (a, b):
        wait_for(lambda d=d: stores_of(d)[relay.url]["pending"] == 0, timeout=15, what="the relay caught up")
        wait_for(lambda d=d: _clean(d), timeout=20, what="verify and doctor clean")
    c = make_daemon(relay.url).start()  # reads the relay alone
    c.client().import_code(code)
    assert _contents(c, sid) == mine
