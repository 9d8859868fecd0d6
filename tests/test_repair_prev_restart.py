"""A head published again over a store that served it rolled back or forged names the manifest it replaces as its
`prev`, and the push lets that manifest go for gc (tests/test_store_lies.py). Which manifest that was was known only
in the memory of the daemon that last published it: a repair in a daemon started since (a restart, a kill -9 between
the repair and its push) named no `prev` (forged) or the rolled-back head's manifest, and the manifest this device
had published was never noted for gc: one object left in the store for good. The manifest each published head names
is now kept with the push's state (sync_state.head_manifest), so the push after a restart does what it does
without one."""

from __future__ import annotations

import pytest

from conftest import run_cli
from test_store_lies import _released
from waiting import wait_for


def _lie(p, lie: str) -> None:
    if lie == "forged":
        p.faults.forged_head = True
    else:
        p.faults.rollback_head = 1


@pytest.mark.parametrize("lie", ["forged", "rolled back"])
@pytest.mark.parametrize("how", ["restart", "killed in the repair's push"])
def test_a_head_published_again_after_a_restart_lets_go_of_the_manifest_it_replaced(make_daemon, portal, lie, how):
    from sessiond.sync.heads import manifest_hash_of

    p, url = portal
    a = make_daemon(url).start()
    sid = a.client().create_session(name="let go after a restart")["id"]
    for text in ("one", "two"):
        a.client().append(sid, "user", text)
        assert run_cli(a.home, "sync", "--wait", "--timeout", "10").returncode == 0
    ((pk, history),) = p.registry.items()
    replaced = manifest_hash_of(history[-1])
    published = history[-1].revision
    if how == "restart":
        a.restart()  # (the daemon that published the head is gone: its memory with it)
        _lie(p, lie)
        assert run_cli(a.home, "sync", "--wait", "--timeout", "10").returncode == 0
    else:
        a.stop()
        a.env["SESSIOND_CRASH_AT"] = "push:put"  # dies as under kill -9 in the repair's push, nothing recorded
        a.start()
        _lie(p, lie)
        assert run_cli(a.home, "sync", "--wait", "--timeout", "10").returncode != 0
        assert a.proc.wait(timeout=15) == 137
        assert len(p.registry[pk]) == len(history)  # (no head published)
        del a.env["SESSIOND_CRASH_AT"]
        a.start()  # the start publishes the head again, as the repair had found (tests/test_repair_head_restart.py)
        wait_for(lambda: p.registry[pk][-1].revision > published, timeout=15, what="the head published again")
    p.faults.forged_head, p.faults.rollback_head = False, None
    head = p.registry[pk][-1]
    assert head.revision == published + 1, [e.revision for e in p.registry[pk]]
    current = manifest_hash_of(head)
    # main: not noted (the new head's prev: none for a forged head, the rolled-back head's manifest else). (With the
    # push's mark, just after its head: waited for)
    wait_for(lambda: replaced in _released(a.home), timeout=10, what="the replaced head's manifest noted for gc")
    released = _released(a.home)
    assert current not in released
    res = run_cli(a.home, "verify", sid, "--json")
    assert res.returncode == 0, res.stdout
