"""kill -9 between an append that passed a session's checkpoint interval and the automatic checkpoint it
was due: the checkpoint was scheduled in memory only, so the crash lost it for good. The next start makes
it, over the conversation as it stood right after that append, as the on-time one would have been."""

from __future__ import annotations

import json

from conftest import cli_json, wait_for
from sessiond.client.wsframes import AppendStream, frame


def head(i: int, sid: str) -> bytes:
    return json.dumps({"tag": i + 1, "session": sid, "key": f"k{i}"}).encode()


def test_a_checkpoint_due_when_the_daemon_was_killed_is_made_at_the_next_start(make_daemon):
    d = make_daemon()
    d.start()
    c = d.client()
    sid = c.create_session(name="proven", policy={"checkpoint_interval": 100})["id"]
    calm = c.create_session(name="calm", policy={"checkpoint_interval": 100})["id"]
    c.append_many(
        sid, [{"role": "user", "content": "m0", "tokens": 60}, {"role": "user", "content": "m1", "tokens": 30}]
    )
    c.append_many(calm, [{"role": "user", "content": "c0", "tokens": 150}])  # its checkpoint made on time
    d.env["SESSIOND_CRASH_AT"] = "checkpoint.auto"
    d.restart()
    c = d.client()
    assert c.checkpoints(calm)["checkpoints"], "the calm session's checkpoint was made before the restart"
    # this batch passes the mark (100) at m2, and the one after it on the same stream comes with it (taken
    # together, before the checkpoint): the daemon dies before the checkpoint is made
    st = AppendStream(d.socket, 10, pipeline=True)
    batch = {
        "messages": [{"role": "user", "content": "m2", "tokens": 20}, {"role": "user", "content": "m3", "tokens": 5}]
    }
    after = {"role": "user", "content": "after", "tokens": 1}
    assert st.sock is not None
    st.sock.sendall(
        b"".join(frame(head(i, sid) + b"\n" + json.dumps(b).encode()) for i, b in enumerate([batch, after]))
    )
    assert d.proc is not None
    d.proc.wait(20)
    d.env.pop("SESSIOND_CRASH_AT")
    d.start()
    c = d.client()
    got = cli_json(d.home, "checkpoints", sid)["checkpoints"]
    rows = c.messages(sid)["messages"]
    held = [m["content"] for m in rows]
    assert held[:4] == ["m0", "m1", "m2", "m3"], held
    # the checkpoint is the on-time one: right after the batch that passed the mark (not of "after", had it
    # come in before the daemon died). Known limit (storage/missedmarks.py): nothing stored marks where one
    # append ends, so the walk takes this device's messages written one after the other at one time for one
    # append; "after", taken together with the batch, is written in the same millisecond now and then, and
    # is then counted in the batch's checkpoint.
    same_ms = len(rows) > 4 and rows[4]["created_at"] == rows[3]["created_at"]
    want = (5, 116, 1) if same_ms else (4, 115, 1)
    assert [(k["messages"], k["tokens"], k["number"]) for k in got] == [want], got
    assert c.verify_proof(sid, got[0])["ok"]
    # a restart makes no second one, nor one for the session whose checkpoint was made on time
    before = len(c.checkpoints(calm)["checkpoints"])
    d.restart()
    c = d.client()
    assert len(c.checkpoints(sid)["checkpoints"]) == 1
    assert len(c.checkpoints(calm)["checkpoints"]) == before
    # the next mark (200) makes the next one on time, as before
    c.append(sid, "user", "m4", tokens=100)
    wait_for(lambda: len(c.checkpoints(sid)["checkpoints"]) == 2, timeout=10, what="the next checkpoint")
    assert c.checkpoints(sid)["checkpoints"][1]["messages"] == len(held) + 1
    st.close()
