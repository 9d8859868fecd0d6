"""A reset of the relay's change feed (`reset: true`: a first look, the relay restarted without its feed's
saved state, a cursor it cannot go on from) names every head the account's feed follows, with its revision.
A daemon took it as "anything may have changed" and read every head it follows (a full round). Now it reads
only the heads whose revision there is not the one it holds (newer, or never read here), and those the
answer does not name at all (the relay may not follow them for this account yet); the others are not read.
Real `sessiond serve` processes and real daemons on loopback; heads read are counted in the relay's
--access-log."""

from __future__ import annotations

import base64
import os
import signal
import sqlite3

from conftest import DaemonProc, relay_served, wait_for
from sessiond.relay import feedstate
from test_relay_feed import invite
from test_relay_follows import head_reads


def b64(pk: bytes) -> str:
    return base64.urlsafe_b64encode(pk).decode().rstrip("=")


def peer_heads(home: str, sid: str) -> set[bytes]:
    """The heads of the other devices of `sid` that the daemon on `home` follows (its peers table)."""
    with sqlite3.connect(f"file:{os.path.join(home, 'sessions.db')}?mode=ro", uri=True) as c:
        return {bytes(r[0]) for r in c.execute("SELECT head_pk FROM peers WHERE session_id=?", (sid,))}


def shared(tmp_path, port: int, data: str, n: int):
    """Two daemons on the relay, `n` sessions of A shared with B, each written by both (so each device
    holds a revision of every head it follows)."""
    a = DaemonProc(str(tmp_path / "a"), f"s5+http://{invite(data)}@127.0.0.1:{port}").start()
    b = DaemonProc(str(tmp_path / "b"), f"s5+http://{invite(data)}@127.0.0.1:{port}").start()
    ca, cb = a.client(), b.client()
    sids = []
    for i in range(n):
        sid = ca.create_session(name=f"s{i}", initial_messages=[{"role": "user", "content": f"hi {i}"}])["id"]
        cb.import_code(ca.share(sid, write=True)["code"])
        sids.append(sid)
    for sid in sids:
        cb.append(sid, "user", "from b")
    for sid in sids:
        wait_for(lambda sid=sid: last(ca, sid) == ["from b"], timeout=30, interval=0.02)
    return a, b, sids


def last(client, sid: str) -> list[str]:
    return [m["content"] for m in client.messages(sid, limit=1, last=True)["messages"]]


def test_a_reset_reads_the_heads_named_newer_and_those_not_named_and_no_other(tmp_path):
    """The relay restarts with every account's follows but a new epoch (so each feed resets). While B
    was not looking, A wrote to one session: the reset names its head with a revision B has not read, and
    B reads it. One head B follows is not in B's follows on the relay any more: B reads it too. The other
    sessions' heads are named with the revisions each device holds: not read (before, each daemon read
    every head it follows)."""
    data = str(tmp_path / "relay")
    before_log, after_log = str(tmp_path / "before.log"), str(tmp_path / "after.log")
    with relay_served(data, "--access-log", log_path=before_log) as info:
        port = info["port"]
        a, b, sids = shared(tmp_path, port, data, 6)
        os.kill(b.proc.pid, signal.SIGSTOP)  # B not looking: it hears of nothing until the reset
    try:
        saved = feedstate.take(data)
        assert saved is not None
        (a_head_5,) = peer_heads(b.home, sids[5])  # A's head of the last session: not followed by B's account
        (a_head_0,) = peer_heads(b.home, sids[0])
        saved.epoch = "fe" * 8  # a new epoch: every follower's feed resets
        for account, (cursor, follows) in list(saved.accounts.items()):
            saved.accounts[account] = (cursor, [(pk, seq) for pk, seq in follows if pk != a_head_5])
        # (A's account set that head: A follows it again when it next writes; B's account follows it no more)
        feedstate.save(data, saved)
        with relay_served(data, "--listen", f"127.0.0.1:{port}", "--access-log", log_path=after_log):
            ca, cb = a.client(), b.client()
            ca.append(sids[0], "user", "while b was not looking")
            wait_for(lambda: "POST /s5/registry " in open(after_log).read(), timeout=30, interval=0.02)  # pushed
            os.kill(b.proc.pid, signal.SIGCONT)
            wait_for(lambda: last(cb, sids[0]) == ["while b was not looking"], timeout=30, interval=0.02)
            wait_for(lambda: b64(a_head_5) in head_reads(after_log), timeout=30, interval=0.02)
            ca.append(sids[1], "user", "after the reset")  # and the feed goes on: named, read alone
            wait_for(lambda: last(cb, sids[1]) == ["after the reset"], timeout=30, interval=0.02)
            read = set(head_reads(after_log))
            assert b64(a_head_0) in read and b64(a_head_5) in read
            # a full round of either daemon reads at least one head of each of the six sessions
            assert len(read) <= 4, f"{len(read)} heads read after the reset: a full round"
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)
        a.stop()
        b.stop()
