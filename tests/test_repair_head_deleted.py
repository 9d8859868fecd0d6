"""A head repair a sync found (the store serving this device's head rolled back or forged) is kept across a restart
(storage/headlies.py HeadMends, in `meta`) and in the daemon's memory, doctor warning of it until a sync finds the store
holding the log whole. A delete of the session forgot neither: doctor went on warning of a session no longer here,
and the same session taken in again (a file's import, a code's) came back with the finding of the one deleted, its
head published again at the next start as if still to mend."""

from __future__ import annotations

import json

from conftest import run_cli
from test_repair_prev_restart import _lie
from test_store_lies import _pushed
from waiting import wait_for


def _warned(a, sid: str) -> list[dict]:
    res = run_cli(a.home, "doctor", "--no-verify", "--json")
    return [f for f in json.loads(res.stdout)["findings"] if f["check"] == "push" and sid in f["message"]]


def test_a_deleted_session_s_head_repair_is_forgotten(make_daemon, portal):
    p, url = portal
    a, sid = _pushed(make_daemon, url, "mended, then deleted", "one", "two")
    ((pk, history),) = p.registry.items()
    published = history[-1].revision
    exported = a.client().export(sid)
    _lie(p, "rolled back")
    assert run_cli(a.home, "sync", "--wait", "--timeout", "10").returncode == 0
    wait_for(lambda: p.registry[pk][-1].revision > published, timeout=15, what="the head published again")
    assert _warned(a, sid)
    p.faults.rollback_head = None
    a.client().delete_session(sid, force=True)
    assert not _warned(a, sid)  # was: warned of, deleted
    a.client().import_file(exported)
    assert a.client().get_session(sid)["id"] == sid
    a.restart()
    assert not _warned(a, sid)  # was: the deleted one's finding
