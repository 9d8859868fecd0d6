"""`sessiond end` with its store failing: the session is ended (its final checkpoint made), and the answer
says so, with the proofs, and that the end is not pushed yet (was: the end committed, then reading the
snapshot's head from the failing store raised, and the user got "internal error; see the daemon log",
exit 1, for an end that had happened)."""

from __future__ import annotations

import json
import os

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


def test_an_end_pushed_while_a_pull_fails_is_answered_pushed(tmp_path):
    """A shared session's end is pushed, but the pull `end` makes beside it fails (another device's heads
    damaged in the store): the answer says pushed, with its snapshot (was: `pushed` was the whole sync's
    outcome, pulls included, and said false for an end that was pushed)."""
    store = tmp_path / "store"
    url = f"file://{store}"
    a = DaemonProc(str(tmp_path / "a"), url).start()
    b = DaemonProc(str(tmp_path / "b"), url).start()
    try:
        ca, cb = a.client(), b.client()
        sid = ca.create_session()["id"]
        ca.append(sid, "user", "hi")
        wait_for(lambda: ca.get_session(sid)["sync"]["pending"] == 0, timeout=30, what="A's push")
        code = ca.share(sid, write=True)["code"]
        heads_of_a = [h for h in os.listdir(store / "heads") if not h.startswith(".")]
        cb.import_code(code)
        a.stop()
        for h in heads_of_a:  # what B pulls from A no longer reads
            (store / "heads" / h).write_bytes(b"garbage")
        res = run_cli(b.home, "end", sid, "--json")
        assert res.returncode == 0, (res.stdout, res.stderr)
        ended = json.loads(res.stdout)
        assert ended["pushed"] is True and ended["snapshot"], ended
        assert "not pushed" not in run_cli(b.home, "end", sid, check=True).stdout
    finally:
        a.stop()
        b.stop()
