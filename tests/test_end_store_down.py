"""`sessiond end` with its store failing: the session is ended (its final checkpoint made), and the answer
says so, with the proofs, and that the end is not pushed yet (was: the end committed, then reading the
snapshot's head from the failing store raised, and the user got "internal error; see the daemon log",
exit 1, for an end that had happened)."""

from __future__ import annotations

import json

from conftest import DaemonProc, run_cli, wait_for


def test_an_end_whose_store_fails_is_answered_as_ended_not_pushed(home, portal):
    p, url = portal
    d = DaemonProc(home, store=url).start()
    try:
        c = d.client()
        sid = c.create_session()["id"]
        c.append(sid, "user", "hello")
        wait_for(lambda: c.get_session(sid)["sync"]["pending"] == 0, timeout=30, what="the first push")
        p.faults.status, p.faults.times = 507, 10**6  # the store refuses everything from now on
        res = run_cli(home, "end", sid, "--json")
        assert res.returncode == 0, (res.stdout, res.stderr)
        ended = json.loads(res.stdout)
        assert ended["status"] == "ended" and ended["pushed"] is False, ended
        assert ended["checkpoints"] and ended["snapshot"] is None, ended
        assert c.get_session(sid)["status"] == "ended"
        text = run_cli(home, "end", sid)
        assert text.returncode == 0 and "not pushed yet" in text.stdout, (text.stdout, text.stderr)
        assert f"sessiond sync --home {home} {sid} --wait" in text.stdout, text.stdout
    finally:
        d.stop()
