"""A device catching up through a chain of rekeys pushes its log once, under the last key (sync/rekey.py
KeySwitch._switch_key): killed (kill -9) between two key switches, the push under the key it was on left to the chain's
end, with a message it acknowledged meanwhile, it converges once started again: every device gets that message,
and it gets every message written under the keys it had not reached. Real daemons over one file:// store."""

from __future__ import annotations

import os

from conftest import cli_json, wait_for
from test_merge import _key, _messages, _shared_pair
from test_sync_races import _arrivals, _held

REKEYS = 3


def test_a_device_killed_between_two_key_switches_of_a_catch_up_converges_after_a_restart(make_daemon, store_dir):
    a, b, sid = _shared_pair(make_daemon, store_dir)
    b.client().append(sid, "user", "B before it went away")
    b.client().sync(sid, wait=True, timeout=10)
    b.stop()  # away through the rekeys
    for i in range(REKEYS):
        a.client().rekey(sid)
        a.client().append(sid, "user", f"A after rekey {i}")
    a.client().sync(sid, wait=True, timeout=10)
    # B's first pull takes the first notice; its switch sees the next notice in the new slot: held there, its log
    # not pushed under that key (left to the chain's end)
    flag = _held(b, "rekey.push_left")
    wait_for(lambda: os.path.exists(flag), timeout=30)
    assert _key(b, sid) not in (_key(a, sid),)  # between two switches: on neither the first key nor the last
    b.client().append(sid, "assistant", "B while catching up")  # acknowledged
    assert _arrivals(flag) == 1
    b.kill()
    b.env.pop("SESSIOND_TEST_PAUSE")
    b.start()

    def converged() -> bool:
        b.client().sync(sid, wait=True, timeout=10)
        a.client().sync(sid, wait=True, timeout=10)
        return _key(b, sid) == _key(a, sid) and "B while catching up" in _messages(a, sid)

    wait_for(converged, timeout=60, interval=0.2)
    want = ["B before it went away", "B while catching up", *[f"A after rekey {i}" for i in range(REKEYS)]]
    for d in (a, b):
        assert all(t in _messages(d, sid) for t in want), (d.home, _messages(d, sid))
        assert cli_json(d.home, "verify")["ok"], d.home
        said = d.client().sync(sid, wait=True, timeout=10)["sessions"][sid]
        assert not said.get("pull_error") and not said.get("push_error"), said
    # a device importing the session now, with the last key alone, reads B's log too
    n = make_daemon("file://" + store_dir).start()
    n.client().import_code(a.client().share(sid)["code"])
    wait_for(lambda: all(t in _messages(n, sid) for t in want), timeout=30)
