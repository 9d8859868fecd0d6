"""kill -9 between an append that passed a session's checkpoint interval and the automatic checkpoint it
was due: the checkpoint was scheduled in memory only, so the crash lost it for good. The next start makes
it, over the conversation as it stood right after that append, as the on-time one would have been."""

from __future__ import annotations

import json
import os
import sqlite3
import time

from conftest import cli_json, run_cli, wait_for
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
    # the checkpoint is the on-time one: right after the batch that passed the mark, not of "after" (had it
    # come in before the daemon died), also when the two were written in the same millisecond (the batch
    # noted where it ended: storage/missedmarks.py)
    assert [(k["messages"], k["tokens"], k["number"], k["v"]) for k in got] == [(4, 115, 1, 2)], got
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
    # the appends' ends that the checkpoints cover are not kept (the one this device noted for each)
    con = sqlite3.connect(f"file:{d.home}/sessions.db?mode=ro", uri=True)
    try:
        assert con.execute("SELECT count(*) FROM mark_ends").fetchone()[0] == 0
    finally:
        con.close()


async def test_appends_written_in_one_millisecond_each_end_where_they_ended(tmp_path, monkeypatch):
    """Two appends to one session in the same millisecond (pipelined on a stream, they share a commit): the
    first passes the mark, and the checkpoint a crash lost is the one right after it, not after both."""
    from sessiond.storage import messages as appends
    from sessiond.storage.database import Database

    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    try:
        sid = (await db.sessions.create({"name": "s", "policy": {"checkpoint_interval": 100}}))["id"]
        await db.append_messages(sid, [{"role": "user", "content": "m0", "tokens": 90}])
        t = appends.stamps()
        monkeypatch.setattr(appends, "stamps", lambda: t)  # the clock does not move between the two (their stamp)
        first = await db.append_messages(
            sid, [{"role": "user", "content": "m1", "tokens": 20}, {"role": "user", "content": "m2", "tokens": 5}]
        )
        after = await db.append_messages(sid, [{"role": "user", "content": "after", "tokens": 1}])
        assert first[-1]["created_at"] == after[0]["created_at"]
        assert await db.missed_checkpoints() == [(sid, [{db.c.device_id: first[-1]["seq"]}])]
    finally:
        await db.close()


def test_a_reimported_tail_that_passed_the_mark_is_proven_whole_after_a_crash(make_daemon, tmp_path):
    """A re-import's tail (the app's conversation continued since the first import) keeps each message's own
    time: times after the session was made, one per message. Before: the start after a crash that lost the
    checkpoint its tail was due took each of those messages for an append of its own (an append is told by its
    one time), and made the checkpoint at the message that passed the mark, not after the whole tail as the
    on-time one is. Now the walk ends an append where the append that passed the mark noted its end."""
    from test_import_times import _iso
    from test_reimport import _write, fixture

    d = make_daemon()
    d.start()
    first = fixture("claude_conversations.json")[:1]
    [made] = cli_json(d.home, "import-file", _write(tmp_path, "a.json", first), "--format", "claude")["sessions"]
    sid, at = made["id"], made["created_at"]
    c = d.client()
    held = len(c.messages(sid)["messages"])
    c.update_session(sid, policy={"checkpoint_interval": c.get_session(sid)["tokens_used"] + 5})
    later = json.loads(json.dumps(first))
    for i in range(3):  # continued in Claude after the first import, each message at its own time
        later[0]["chat_messages"].append(
            {
                "uuid": f"a1000000-0000-4000-8000-1000000000{i:02d}",
                "text": f"tail message {i} " + "words " * 40,
                "content": [{"type": "text", "text": f"tail message {i} " + "words " * 40}],
                "sender": ("human", "assistant")[i % 2],
                "created_at": _iso(at + 0.002 * (i + 1)),
            }
        )
    wait_for(lambda: time.time() > at + 0.01, timeout=5, what="the tail's times to have come")
    d.env["SESSIOND_CRASH_AT"] = "checkpoint.auto"
    d.restart()
    run_cli(d.home, "import-file", _write(tmp_path, "b.json", later), "--format", "claude", "--json")
    assert d.proc is not None
    d.proc.wait(20)
    d.env.pop("SESSIOND_CRASH_AT")
    d.start()
    c = d.client()
    assert len(c.messages(sid)["messages"]) == held + 3, "the tail was appended before the daemon died"
    got = c.checkpoints(sid)["checkpoints"]
    assert [k["messages"] for k in got] == [held + 3], got  # after the whole tail, as the on-time one
    assert c.verify_proof(sid, got[0])["ok"]
