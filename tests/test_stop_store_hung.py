"""The stop's last part (the sync engine's stop: its pushes, its threads, the stores' close; then the
database's close) had no bound of its own: a folder store whose write hangs at that moment (a network share
gone) held it there, the writer thread joined for up to 30 s, and `sessiond stop` killed the daemon at its
15 s, past the database's close. The engine's stop now waits for the stores within what the stop's deadline
leaves, then goes on (the heads' records kept, the database closed): the stop ends in time, not killed, and
nothing acknowledged is lost: the append is there after a start, and its push is made then."""

from __future__ import annotations

import json
import os
import time

from conftest import run_cli, wait_for


def test_a_store_hung_at_the_stop_does_not_hold_it_past_its_deadline(make_daemon, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    flag = str(tmp_path / "held")
    d = make_daemon(f"file://{store}", env={"SESSIOND_TEST_PAUSE": f"store.write:{flag}"}).start()
    try:
        c = d.client()
        sid = c.create_session(name="s")["id"]
        m = c.append(sid, "user", "acknowledged")
        wait_for(lambda: os.path.exists(flag), timeout=30, what="the push's write held in the folder store")
        began = time.monotonic()
        res = run_cli(d.home, "stop", "--json")
        took = time.monotonic() - began
        assert res.returncode == 0, res.stderr
        said = json.loads(res.stdout)
        assert said["stopped"] is True and said["killed"] is False, (said, res.stderr, took)
        assert took < 14, took  # the stop's own budget (9 s), not the CLI's 15 s and its kill
    finally:
        if os.path.exists(flag):
            os.remove(flag)  # the held write goes on (the process then ends)
    wait_for(lambda: d.proc.poll() is not None, timeout=30, what="the old daemon's process gone")
    d.env.pop("SESSIOND_TEST_PAUSE")
    d.start()
    c = d.client()
    assert [x["id"] for x in c.messages(sid)["messages"]] == [m["id"]]
    assert c.sync(sid, wait=True)["complete"] is True
