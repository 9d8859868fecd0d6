"""A sync that finds the store serving this device's head rolled back or forged, while it holds every object of the
log, publishes the head again (a forced push: sync/lostlog.py head_only), and doctor warns of it. Both were kept in
the daemon's memory alone: a daemon killed (or stopped) between the finding and that push came back with neither.
Nothing published the head again (no push waits: every change is pushed), so the store went on serving it rolled
back or forged to every other device until the next `sessiond sync`; and doctor's warning was gone. Now the finding
is kept in the database: the daemon started again publishes the head, and doctor still says what was found."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from test_repair_prev_restart import _lie
from test_store_lies import _pushed
from waiting import wait_for


@pytest.mark.parametrize("lie", ["forged", "rolled back"])
def test_a_head_repair_cut_short_by_a_kill_is_finished_by_the_next_start(make_daemon, portal, lie):
    p, url = portal
    a, sid = _pushed(make_daemon, url, "mended after a kill", "one", "two")
    ((pk, history),) = p.registry.items()
    published = history[-1].revision
    a.stop()
    a.env["SESSIOND_CRASH_AT"] = "push:put"  # dies as under kill -9 in the repair's push, its head not published
    a.start()
    _lie(p, lie)
    assert run_cli(a.home, "sync", "--wait", "--timeout", "10").returncode != 0
    assert a.proc.wait(timeout=15) == 137
    assert p.registry[pk][-1].revision == published  # (no head published)
    del a.env["SESSIOND_CRASH_AT"]
    a.start()  # no `sessiond sync`: the start finishes what the repair began
    # main: never (no push waited, the finding forgotten): the store served the bad head until the next sync
    wait_for(lambda: p.registry[pk][-1].revision > published, timeout=15, what="the head published again")
    res = run_cli(a.home, "doctor", "--no-verify", "--json")
    pushes = [f for f in json.loads(res.stdout)["findings"] if f["check"] == "push" and sid in f["message"]]
    assert pushes and pushes[0]["level"] == "warn" and "published it again" in pushes[0]["message"], res.stdout
    a.restart()  # the warning stays until a sync finds the store holding the log whole; then it goes, for good
    res = run_cli(a.home, "doctor", "--no-verify", "--json")
    assert [f for f in json.loads(res.stdout)["findings"] if f["check"] == "push" and sid in f["message"]], res.stdout
    p.faults.forged_head, p.faults.rollback_head = False, None
    assert run_cli(a.home, "sync", "--wait", "--timeout", "10").returncode == 0
    a.restart()
    res = run_cli(a.home, "doctor", "--no-verify", "--json")
    assert not [f for f in json.loads(res.stdout)["findings"] if f["check"] == "push" and sid in f["message"]]
