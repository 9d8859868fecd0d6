"""A reset of the relay's change feed (`reset: true`: a first look, the relay restarted without its feed's
saved state, a cursor it cannot go on from) names every head the account's feed follows, with its revision.
A daemon took it as "anything may have changed" and read every head it follows (a full round). Now it reads
only the heads whose revision there is not the one it holds (newer, or never read here), and those the
answer does not name at all (the relay may not follow them for this account yet); the others are not read.
Real `sessiond serve` processes and real daemons on loopback; heads read are counted in the relay's
--access-log."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import sqlite3
import stat
import subprocess

from nacl.signing import SigningKey

from conftest import DaemonProc, popen_cli, relay_served, wait_for
from sessiond.relay import feedstate, follows
from sessiond.relay.admin import revoke
from sessiond.relay.feed import Feed
from test_relay import Served, head, store_for
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


def named(read: set[str], a, b, sids: list[str]) -> list[str]:
    """The keys read, each named by whose head of which session it is (else `other`: a members slot, or a
    request that is not these daemons'), for a failure's message: what a count past its bound read."""
    names = {}
    for i, sid in enumerate(sids):
        names.update({b64(pk): f"A's head of s{i}" for pk in peer_heads(b.home, sid)})
        names.update({b64(pk): f"B's head of s{i}" for pk in peer_heads(a.home, sid)})
    return sorted(names.get(k, f"other {k[:12]}") for k in read)


def last(client, sid: str) -> list[str]:
    return [m["content"] for m in client.messages(sid, limit=1, last=True)["messages"]]


def test_a_reset_reads_the_heads_named_newer_and_those_not_named_and_no_other(tmp_path, reserved_port):
    """The relay restarts with every account's follows but a new epoch (so each feed resets). While B
    was not looking, A wrote to one session: the reset names its head with a revision B has not read, and
    B reads it. One head B follows is not in B's follows on the relay any more: B reads it too. The other
    sessions' heads are named with the revisions each device holds: not read (before, each daemon read
    every head it follows)."""
    data = str(tmp_path / "relay")
    before_log, after_log = str(tmp_path / "before.log"), str(tmp_path / "after.log")
    first = reserved_port.port  # held for the test: the relay is restarted on it below
    with relay_served(data, "--listen", f"127.0.0.1:{first}", "--access-log", log_path=before_log) as info:
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
            assert len(read) <= 4, f"{len(read)} heads read after the reset: a full round? {named(read, a, b, sids)}"
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)
        a.stop()
        b.stop()


@contextlib.contextmanager
def relay_killed_at_exit(data: str, *flags: str, log_path: str):
    """A `sessiond serve` process (as conftest.relay_served) that is killed (SIGKILL) at the end, not
    stopped: it writes no feed file."""
    with open(log_path, "wb") as log:
        proc = popen_cli(
            ["serve", "--data", data, "--json", *flags],
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=log,
        )
    try:
        line = proc.stdout.readline() if proc.stdout else b""
        assert line, open(log_path).read()[-2000:]
        yield json.loads(line)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_a_relay_killed_and_restarted_costs_its_followers_the_heads_that_moved_not_a_full_round(
    tmp_path, reserved_port
):
    """A relay killed (kill -9, a crash, a power cut) kept no feed state: it started with a new epoch and
    followed nothing for anyone, so each daemon's reset named nothing, and each read every head it follows
    (a full round: with many shared sessions, every relay crash cost every daemon that). Now what each
    account follows is kept on disk as it grows (relay/follows.py): the reset names every head an account
    follows with its revision, and a daemon reads only the heads that moved."""
    data = str(tmp_path / "relay")
    before_log, after_log = str(tmp_path / "before.log"), str(tmp_path / "after.log")
    first = reserved_port.port  # held for the test: the relay is restarted on it below
    with relay_killed_at_exit(data, "--listen", f"127.0.0.1:{first}", "--access-log", log_path=before_log) as info:
        port = info["port"]
        a, b, sids = shared(tmp_path, port, data, 6)
        assert len(set(head_reads(before_log))) >= 2 * len(sids)  # (the log names the heads read)
    try:
        assert not os.path.exists(os.path.join(data, feedstate.FILE))  # killed: no feed state kept
        (a_head_0,) = peer_heads(b.home, sids[0])
        ca, cb = a.client(), b.client()
        with relay_killed_at_exit(data, "--listen", f"127.0.0.1:{port}", "--access-log", log_path=after_log):
            ca.append(sids[0], "user", "after the crash")
            wait_for(lambda: last(cb, sids[0]) == ["after the crash"], timeout=30, interval=0.02)
            ca.append(sids[1], "user", "and after that")
            wait_for(lambda: last(cb, sids[1]) == ["and after that"], timeout=30, interval=0.02)
            read = set(head_reads(after_log))
            assert b64(a_head_0) in read
            # a full round of either daemon reads at least one head of each of the six sessions
            assert len(read) <= 4, f"{len(read)} heads read after the relay was killed: a full round"
    finally:
        a.stop()
        b.stop()


async def test_the_follows_log_survives_a_crash_torn_and_bounded_and_forgets_revoked_accounts(tmp_path):
    """relay/follows.py: each account's follows are appended as they are made; a relay that did not stop
    cleanly starts following them again (a torn last record ignored, the log written again whole); the
    log of a revoked account is deleted; a log past twice the follows bound is written again from the
    follows kept."""
    data = str(tmp_path / "relay")
    served = await Served(data, open_registration=True).start()
    kept, gone = store_for(served, tmp_path), store_for(served, tmp_path)
    k = [SigningKey(bytes([0x30 + i]) * 32) for i in range(3)]
    try:
        await kept.set_head(head(1, k[0]))
        assert await kept.get_head(head(1, k[1]).pk) is None  # followed before anyone set it
        await gone.set_head(head(1, k[2]))
        views = served.relay.feed._views
        (acct,) = [a for a in views if head(1, k[0]).pk in views[a].heads]
        (victim,) = set(views) - {acct}
        logged = os.path.join(data, follows.DIR, acct)
        assert open(logged, "rb").read() == head(1, k[0]).pk + head(1, k[1]).pk
        assert stat.S_IMODE(os.stat(logged).st_mode) == 0o600
    finally:
        for s in (kept, gone):
            await s.close()
        await served.stop()
    os.unlink(os.path.join(data, feedstate.FILE))  # as a relay killed leaves its folder
    with open(logged, "ab") as f:
        f.write(head(1, k[2]).pk[:20])  # an append a crash cut short
    revoke(data, victim)
    assert not os.path.exists(os.path.join(data, follows.DIR, victim))
    again = await Served(data).start()
    try:
        feed = again.relay.feed
        assert set(feed._views) == {acct}
        assert list(feed._views[acct].heads) == [head(1, k[0]).pk, head(1, k[1]).pk]
        assert feed.since(acct, 0, None) == (True, 0, [(head(1, k[0]).pk, 1)])  # a reset names what it follows
        assert os.path.getsize(logged) == 2 * follows.RECORD  # written again whole
    finally:
        await again.stop()

    log = follows.FollowLog(str(tmp_path / "bounded"), 2)
    bounded = Feed(max_followed=2)
    bounded.log = log
    pks = [bytes([0xED, i]) + bytes(31) for i in range(9)]
    for pk in pks:
        bounded.follow("c" * 32, pk)
    raw = open(os.path.join(log.dir, "c" * 32), "rb").read()
    assert len(raw) <= 4 * follows.RECORD and raw.endswith(pks[-1])
    assert log.load(lambda account: True)["c" * 32][-2:] == pks[-2:]
