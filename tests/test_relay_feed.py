"""The relay's change feed (`GET /s5/registry/changes`) is scoped to the account that asks: it names only
the heads that account wrote or read, so an account learns nothing of the others' activity (which heads
exist, who writes when and how often) beyond what it could read of heads whose keys it knows. A real
`sessiond serve` process and real daemons on loopback."""

from __future__ import annotations

import asyncio
import base64
import glob
import hashlib
import json
import os
import shutil
import time

import aiohttp

from conftest import DaemonProc, relay_served, run_cli, wait_for


def invite(data: str) -> str:
    res = run_cli(None, "serve", "invite", "--json", "--data", data)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["invite"]


def home_token(home: str) -> str:
    (path,) = glob.glob(os.path.join(home, "store-tokens", "s5-*.token"))
    return open(path).read().strip()


def heads_of(data: str, token: str) -> set[bytes]:
    """The head keys the account holding `token` created on the relay (its head pins)."""
    with open(os.path.join(data, "tokens", hashlib.sha256(token.encode()).hexdigest())) as f:
        account = json.load(f)["account"]
    return {bytes.fromhex(name) for name in os.listdir(os.path.join(data, "headpins", account))}


def synced(home: str) -> None:
    res = run_cli(home, "sync", "--wait", "--timeout", "60", "--json")
    assert res.returncode == 0, res.stdout + res.stderr


async def changes(port: int, token: str, query: str) -> dict:
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            f"http://127.0.0.1:{port}/s5/registry/changes?{query}", headers={"Authorization": f"Bearer {token}"}
        ) as r,
    ):
        assert r.status == 200, await r.text()
        return await r.json()


def named(doc: dict) -> set[bytes]:
    return {base64.urlsafe_b64decode(c["pk"] + "==") for c in doc["changes"]}


async def test_an_account_s_feed_never_names_another_account_s_heads(tmp_path):
    """Every account of a relay saw, through the change feed, every head's key and revision: which
    heads the other accounts hold, and who writes when and how often. Now account X's feed names only
    the heads X wrote or read, and still names X's own changes as soon as they are set."""
    data = str(tmp_path / "relay")
    with relay_served(data) as info:
        port = info["port"]
        x = DaemonProc(str(tmp_path / "x"), f"s5+http://{invite(data)}@127.0.0.1:{port}").start()
        y = DaemonProc(str(tmp_path / "y"), f"s5+http://{invite(data)}@127.0.0.1:{port}").start()
        try:
            first = [{"role": "user", "content": "hi"}]
            sx = x.client().create_session(name="x", initial_messages=first)["id"]
            sy = y.client().create_session(name="y", initial_messages=first)["id"]
            synced(x.home)
            synced(y.home)
            tx, ty = home_token(x.home), home_token(y.home)
            mine, theirs = heads_of(data, tx), heads_of(data, ty)
            assert mine and theirs and not mine & theirs
            doc = await changes(port, tx, "since=0")  # a first look: every head the feed tells X of
            assert doc["reset"] and not named(doc) & theirs, "X's feed names Y's heads"
            assert named(doc) == mine
            # parked on X's feed: Y's writes do not answer it, X's own do, at once
            waiting = asyncio.create_task(changes(port, tx, f"since={doc['cursor']}&epoch={doc['epoch']}&wait=20"))
            # the loop runs meanwhile (the daemons' calls on threads), so the long-poll is parked while Y writes:
            # blocking calls here held the request back until both writes were done, and Y's write waking X's
            # feed went untested. (A start slower than this yield only makes the check below see less.)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(y.client().append, sy, "user", "y writes")
            await asyncio.to_thread(synced, y.home)
            assert heads_of(data, ty) == theirs
            done, _ = await asyncio.wait([waiting], timeout=1.0)
            assert not done, "Y's write answered X's parked feed"
            await asyncio.to_thread(x.client().append, sx, "user", "x writes")
            t0 = time.monotonic()
            await asyncio.to_thread(synced, x.home)
            doc = await asyncio.wait_for(waiting, 20)
            assert time.monotonic() - t0 < 5
            assert not doc["reset"] and named(doc) and named(doc) <= mine, "X's feed named a head of Y's"
        finally:
            x.stop()
            y.stop()


async def test_an_account_follows_a_bounded_number_of_heads_the_oldest_dropped():
    """What an account follows is memory on the relay: past the cap, the head that changed (or was
    followed) longest ago is dropped, and its changes are no longer that account's to hear of."""
    from sessiond.relay.feed import Feed

    feed = Feed(max_followed=3)
    p = [bytes([0xED, i]) + bytes(31) for i in range(5)]
    for pk in p:
        feed.load(pk, 1)
    for pk in p[:3]:
        feed.follow("a", pk)
    await feed.changed(p[0], 2)  # p0 changed: now the newest; p1 the oldest
    feed.follow("a", p[3])  # a fourth: p1 goes
    await feed.changed(p[1], 2)
    await feed.changed(p[3], 2)
    assert feed.since("a", 1, feed.epoch) == (False, 2, [(p[3], 2)])
    assert feed.since("a", 0, None) == (True, 2, [(p[2], 1), (p[0], 2), (p[3], 2)])
    assert feed.since("nobody", 0, feed.epoch) == (False, 0, [])  # follows nothing: told nothing
    assert feed.since("nobody", 0, None) == (True, 0, [])
    assert p[1] not in feed._followers  # nobody follows it any more: nothing kept for it


def test_followers_hear_of_changes_promptly_after_the_relay_restarts(tmp_path, reserved_port):
    """A relay that starts with no feed file (killed rather than stopped, or its folder written by an earlier
    version, which kept none) has a new epoch, which makes each daemon's feed reset: the daemon reads the
    heads the reset does not name at the revision it holds (here, its folder an earlier version's, with no
    follows logs either: every head), which follows them again: a follower still hears of the next change
    through the feed, in seconds, not at its next full round (minutes)."""
    data = str(tmp_path / "relay")
    first = reserved_port.port  # held for the test: the relay is restarted on it below
    with relay_served(data, "--listen", f"127.0.0.1:{first}") as info:
        port = info["port"]
        a = DaemonProc(str(tmp_path / "a"), f"s5+http://{invite(data)}@127.0.0.1:{port}").start()
        b = DaemonProc(str(tmp_path / "b"), f"s5+http://{invite(data)}@127.0.0.1:{port}").start()
        ca, cb = a.client(), b.client()
        sid = ca.create_session(name="s", initial_messages=[{"role": "user", "content": "hi"}])["id"]
        cb.import_code(ca.share(sid, write=True)["code"])
        last = lambda: [m["content"] for m in cb.messages(sid, limit=1, last=True)["messages"]][-1:]  # noqa: E731
        ca.append(sid, "user", "before the restart")
        wait_for(lambda: last() == ["before the restart"], timeout=30, interval=0.02)
    os.unlink(os.path.join(data, "feed"))  # as an earlier version leaves its folder
    shutil.rmtree(os.path.join(data, "follows"))
    try:
        with relay_served(data, "--listen", f"127.0.0.1:{port}"):  # the same address: the same accounts
            for i in range(3):
                t0 = time.monotonic()
                ca.append(sid, "user", f"after the restart {i}")
                wait_for(lambda: last() == [f"after the restart {i}"], timeout=30, interval=0.02)
                assert time.monotonic() - t0 < 15
    finally:
        a.stop()
        b.stop()


async def test_a_head_followed_before_it_exists_is_not_named_while_the_follower_is_behind():
    """An account follows a head nobody has set yet (a member that has not pushed) while its daemon is one
    change behind: the feed answered that daemon's next poll with a 500 (a KeyError on the head's missing
    revision), its daemon took the feed for broken and fell back to reading every head. Now the feed names
    the change it missed, and not the head that does not exist."""
    from sessiond.relay.feed import Feed

    feed = Feed()
    a, absent = b"\xed" + bytes(32), b"\xed" + b"\x01" * 32
    feed.load(a, 1)
    feed.follow("x", a)
    await feed.changed(a, 2)  # the account's cursor is 1; its daemon has read up to 0
    feed.follow("x", absent)  # followed at the cursor: 1, after the daemon's 0
    assert feed.since("x", 0, feed.epoch) == (False, 1, [(a, 2)])
    assert feed.since("x", 0, None) == (True, 1, [(a, 2)])
