"""What an account's change feed follows survives a clean restart of the relay (relay/feedstate.py): the
same epoch, the same cursors, the same follows, so a daemon that followed the feed before the restart is
told only what changed after it, and reads no head it need not. A relay that did not stop cleanly starts
with a new epoch and the follows its follows logs kept (each follower reset: tests/test_relay_reset.py);
one whose data an earlier version wrote, as before (each follower reset, a full round once); nothing is
missed."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
from types import SimpleNamespace

from nacl.signing import SigningKey

from conftest import DaemonProc, eventually, relay_served, wait_for
from sessiond.relay import feedstate, follows
from sessiond.relay.admin import revoke
from sessiond.relay.feed import Feed
from sessiond.stores import s5feed
from sessiond.stores.s5 import b64url
from test_relay import Served, head, raw, store_for
from test_relay_feed import invite


async def feed_of(served: Served, token: str, query: str) -> dict:
    status, body = await raw(served, "GET", f"/s5/registry/changes?{query}", token)
    assert status == 200, body
    return json.loads(body)


def pks(doc: dict) -> set[str]:
    return {c["pk"] for c in doc["changes"]}


async def test_a_clean_restart_keeps_each_account_s_follows_epoch_and_cursor(tmp_path):
    """A relay restarted (an upgrade, a reboot) forgot what every account followed and took a new epoch:
    every daemon's feed reset, and each read every head it follows again. Now a follower's feed goes on
    from its cursor: not reset, and the heads changed after the restart, one it set and one it read before
    anyone set it, are named to it."""
    data = str(tmp_path / "relay")
    k1, k2 = SigningKey(b"\x11" * 32), SigningKey(b"\x12" * 32)
    served = await Served(data, open_registration=True).start()
    follower, other = store_for(served, tmp_path), store_for(served, tmp_path)
    try:
        await follower.set_head(head(1, k1))  # set: followed
        assert await follower.get_head(head(1, k2).pk) is None  # read before anyone set it: followed
        token = follower._token
        first = await feed_of(served, token, "since=0")
        assert first["reset"]
        await other.set_head(head(2, k1))
        doc = await feed_of(served, token, f"since={first['cursor']}&epoch={first['epoch']}")
        assert not doc["reset"] and pks(doc) == {b64url(head(1, k1).pk)}
        epoch, cursor = doc["epoch"], doc["cursor"]
        assert not os.path.exists(os.path.join(data, feedstate.FILE))  # nothing to go on from while serving
    finally:
        await served.stop()
    path = os.path.join(data, feedstate.FILE)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = await Served(data).start()
    follower2, other2 = store_for(again, tmp_path), store_for(again, tmp_path)
    follower2._key, follower2._token = follower._key, token
    other2._key, other2._token = other._key, other._token
    try:
        assert not os.path.exists(path)  # read and deleted: a crash from here on starts afresh
        doc = await feed_of(again, token, f"since={cursor}&epoch={epoch}")
        assert doc["epoch"] == epoch and not doc["reset"] and doc["cursor"] == cursor and not doc["changes"]
        await other2.set_head(head(1, k2))
        await other2.set_head(head(3, k1))
        doc = await feed_of(again, token, f"since={cursor}&epoch={epoch}")
        assert not doc["reset"] and pks(doc) == {b64url(head(1, k2).pk), b64url(head(3, k1).pk)}
        assert {c["revision"] for c in doc["changes"]} == {1, 3}
    finally:
        for s in (follower, other, follower2, other2):
            await s.close()
        await again.stop()


async def test_a_revoked_account_s_follows_are_not_kept_past_a_restart(tmp_path):
    """What an account follows is metadata about it: an account revoked (`serve revoke`) while the relay
    was stopped has its follows dropped when the relay starts; the others keep theirs."""
    data = str(tmp_path / "relay")
    served = await Served(data, open_registration=True).start()
    kept, gone = store_for(served, tmp_path), store_for(served, tmp_path)
    try:
        await kept.set_head(head(1, SigningKey(b"\x21" * 32)))
        await gone.set_head(head(1, SigningKey(b"\x22" * 32)))
        accounts = dict(served.relay.feed._views)
        assert len(accounts) == 2
    finally:
        await kept.close()
        await gone.close()
        await served.stop()
    gone_pk = head(1, SigningKey(b"\x22" * 32)).pk.hex()
    (victim,) = [a for a in accounts if os.path.exists(os.path.join(data, "headpins", a, gone_pk))]
    revoke(data, victim)
    again = await Served(data).start()
    try:
        assert set(again.relay.feed._views) == set(accounts) - {victim}
    finally:
        await again.stop()


async def test_a_head_changed_after_the_state_was_written_is_named_at_start():
    """The file holds each followed head's revision: a head that moved after it was written (a write
    finishing as the relay stopped, an older relay run on the folder meanwhile) is named as a change, after
    every cursor, so a follower that had read up to the saved cursor hears of it."""
    p = [bytes([0xED, i]) + bytes(31) for i in range(4)]
    feed = Feed()
    for pk in p[:3]:
        feed.load(pk, 1)
    for pk in p:
        feed.follow("a" * 32, pk)
    feed.follow("b" * 32, p[0])
    await feed.changed(p[0], 2)
    saved = feedstate.decode(feedstate.encode(feed.saved()))
    assert saved == feed.saved()

    restarted = Feed()
    for pk, rev in ((p[0], 2), (p[1], 5), (p[2], 1), (p[3], 1)):  # p1 moved; p3 set (it was not)
        restarted.load(pk, rev)
    assert restarted.restore(saved, keep=lambda account: account != "b" * 32) == 2
    assert restarted.epoch == feed.epoch
    assert restarted.since("a" * 32, 1, feed.epoch) == (False, 3, [(p[1], 5), (p[3], 1)])
    assert restarted.since("b" * 32, 1, feed.epoch) == (True, 0, [])  # not kept (revoked): reset, follows nothing
    assert "b" * 32 not in restarted.saved().accounts


async def test_a_relay_with_no_state_or_a_damaged_one_starts_afresh(tmp_path):
    """A data folder an earlier version wrote (no feed file, no follows logs), a relay that did not stop
    cleanly, or a damaged file: the relay starts with a new epoch; each follower's feed resets and the feed
    works from there. The reset names the heads the account followed as its follows log kept them
    (relay/follows.py: its daemon reads only those that moved); with no log (an earlier version's
    folder), none (its daemon reads every head it follows once, which follows them again)."""
    data = str(tmp_path / "relay")
    served = await Served(data, open_registration=True).start()
    store = store_for(served, tmp_path)
    try:
        await store.set_head(head(1))
        token = store._token
        before = await feed_of(served, token, "since=0")
    finally:
        await served.stop()
    path = os.path.join(data, feedstate.FILE)
    saved = open(path, "rb").read()
    # its checksum's last byte changed: a "\0" put there was no change at all when that byte was 0 already (1 run
    # in 256: the file read whole, the feed not reset, the test failed)
    flipped = saved[:-1] + bytes([saved[-1] ^ 0xFF])
    for i, damage in enumerate((None, b"garbage", flipped, "earlier")):
        if damage == "earlier":  # as an earlier version leaves its folder: no feed file, no follows logs
            os.unlink(path)
            shutil.rmtree(os.path.join(data, follows.DIR))
        elif damage is None:
            os.unlink(path)  # as a relay killed leaves its folder
        else:
            with open(path, "wb") as f:
                f.write(damage)
        again = await Served(data).start()
        store2 = store_for(again, tmp_path)
        store2._key, store2._token = store._key, token
        try:
            assert not os.path.exists(path)
            doc = await feed_of(again, token, f"since={before['cursor']}&epoch={before['epoch']}")
            assert doc["reset"] and doc["epoch"] != before["epoch"]
            assert pks(doc) == (set() if damage == "earlier" else {b64url(head(1).pk)})
            assert await store2.get_head(head(1).pk) is not None  # read: followed again
            await store2.set_head(head(2 + i))
            after = await feed_of(again, token, f"since={doc['cursor']}&epoch={doc['epoch']}")
            assert not after["reset"] and pks(after) == {b64url(head(1).pk)}
        finally:
            await store2.close()
            await again.stop()
    await store.close()


async def test_a_bad_entry_in_the_feed_file_costs_only_its_account_s_cursor(tmp_path, caplog):
    """One malformed entry (a head key that is not Ed25519, in a file that otherwise reads) made the relay
    drop the whole file: every follower's feed reset. Now the accounts it does not touch go on from their
    cursors; the account that follows the bad head follows what its follows log kept, each head named to it
    as changed after its cursor (its daemon reads those that moved); the warning names that account."""
    import hashlib

    data = str(tmp_path / "relay")
    good_key, bad_key = SigningKey(b"\x31" * 32), SigningKey(b"\x32" * 32)
    served = await Served(data, open_registration=True).start()
    good, bad = store_for(served, tmp_path), store_for(served, tmp_path)
    try:
        await good.set_head(head(1, good_key))
        await bad.set_head(head(1, bad_key))
        before = {s: await feed_of(served, s._token, "since=0") for s in (good, bad)}
    finally:
        await served.stop()
    path = os.path.join(data, feedstate.FILE)
    raw = open(path, "rb").read()
    body = raw[: -hashlib.blake2b(digest_size=32).digest_size]
    pk = head(1, bad_key).pk
    assert body.count(pk) == 1
    body = body.replace(pk, b"\x00" + pk[1:])  # one head's key not Ed25519, the file's framing intact
    with open(path, "wb") as f:
        f.write(body + hashlib.blake2b(body, digest_size=32).digest())
    caplog.set_level("WARNING", logger="sessiond.relay")
    again = await Served(data).start()
    good2, bad2 = store_for(again, tmp_path), store_for(again, tmp_path)
    for old, new in ((good, good2), (bad, bad2)):
        new._key, new._token = old._key, old._token
    try:
        epoch = before[good]["epoch"]
        doc = await feed_of(again, good._token, f"since={before[good]['cursor']}&epoch={epoch}")
        assert doc["epoch"] == epoch and not doc["reset"] and not doc["changes"], doc
        doc = await feed_of(again, bad._token, f"since={before[bad]['cursor']}&epoch={epoch}")
        assert doc["epoch"] == epoch and not doc["reset"] and pks(doc) == {b64url(pk)}, doc
        await good2.set_head(head(2, good_key))
        doc = await feed_of(again, good._token, f"since={before[good]['cursor']}&epoch={epoch}")
        assert not doc["reset"] and pks(doc) == {b64url(head(2, good_key).pk)}
        assert "skipped" in caplog.text and good._token not in caplog.text and bad._token not in caplog.text
    finally:
        for s in (good, bad, good2, bad2):
            await s.close()
        await again.stop()


def head_reads(log_path: str) -> list[str]:
    """The head keys of the `GET /s5/registry?pk=` requests the relay served, from its access log."""
    with open(log_path) as f:
        return re.findall(r'"GET /s5/registry\?pk=([A-Za-z0-9_-]+)', f.read())


def test_daemons_following_the_feed_go_on_after_a_relay_restart_without_a_full_round(tmp_path, reserved_port):
    """Two real daemons share several sessions through a real `sessiond serve`; the relay is stopped and
    started again (an upgrade). A head changed after the restart reaches the other daemon through the
    feed, in seconds, and neither daemon reads the heads of the sessions that did not change: no full
    round (before, the restart reset every feed and each daemon read every head it follows again)."""
    data = str(tmp_path / "relay")
    before_log, after_log = str(tmp_path / "before.log"), str(tmp_path / "after.log")
    first = reserved_port.port  # held for the test: the relay is restarted on it below
    with relay_served(data, "--listen", f"127.0.0.1:{first}", "--access-log", log_path=before_log) as info:
        port = info["port"]
        a = DaemonProc(str(tmp_path / "a"), f"s5+http://{invite(data)}@127.0.0.1:{port}").start()
        b = DaemonProc(str(tmp_path / "b"), f"s5+http://{invite(data)}@127.0.0.1:{port}").start()
        ca, cb = a.client(), b.client()
        sids = []
        for i in range(6):
            sid = ca.create_session(name=f"s{i}", initial_messages=[{"role": "user", "content": f"hi {i}"}])["id"]
            cb.import_code(ca.share(sid, write=True)["code"])
            sids.append(sid)
        last = lambda sid: [m["content"] for m in cb.messages(sid, limit=1, last=True)["messages"]]  # noqa: E731
        ca.append(sids[0], "user", "before the restart")
        wait_for(lambda: last(sids[0]) == ["before the restart"], timeout=30, interval=0.02)
        assert len(set(head_reads(before_log))) >= len(sids)  # (the log names the heads read)
    try:
        with relay_served(data, "--listen", f"127.0.0.1:{port}", "--access-log", log_path=after_log):
            t0 = time.monotonic()
            ca.append(sids[0], "user", "after the restart")
            wait_for(lambda: last(sids[0]) == ["after the restart"], timeout=30, interval=0.02)
            assert time.monotonic() - t0 < 15
            # and then a change of another session: its head alone is read for it
            ca.append(sids[1], "user", "another")
            wait_for(lambda: last(sids[1]) == ["another"], timeout=30, interval=0.02)
            read = set(head_reads(after_log))
            # each change: B reads A's head, A (told of its own head) B's; a full round of either daemon reads
            # at least one head of each of the six sessions (18 heads here before)
            assert len(read) <= 4, f"{len(read)} heads read after the restart: a full round"
    finally:
        a.stop()
        b.stop()


async def test_a_feed_failing_briefly_names_nothing_yet_and_past_its_grace_leaves_followers_to_read_heads(
    tmp_path, monkeypatch
):
    """While the relay restarts, the daemon's feed fails: it used to give up on it at the first failure,
    and the follower read every head (a full round, at once and again when the relay was back). Now a feed
    failing for less than FEED_GRACE has named nothing new yet, its cursor kept; failing longer, the
    follower falls back to reading each head, as from a store without a feed.

    The grace is the code's own (FEED_GRACE, a minute), and the feed's clock is moved past it rather than
    waited out: a grace shortened to 2 s made "within the grace" a bet that the two lines checking it ran
    within 2 s of the first failed poll on a loaded machine."""
    skew = [0.0]
    monkeypatch.setattr(s5feed, "time", SimpleNamespace(monotonic=lambda: time.monotonic() + skew[0]))
    served = await Served(str(tmp_path / "relay"), open_registration=True).start()
    store = store_for(served, tmp_path)
    try:
        await store.set_head(head(1))
        token, _ = await store.head_changes(None)
        await served.stop()
        failing = lambda: store._feed is not None and store._feed._failing_since is not None  # noqa: E731
        await eventually(failing, what="the feed's poll failing")
        assert await store.head_changes(token) == (token, set())  # within the grace: nothing named yet
        skew[0] = s5feed.FEED_GRACE  # the feed's clock a whole grace later: failing for longer than it
        assert await store.head_changes(token) is None  # the follower reads heads
        assert await store.head_versions() is None
    finally:
        await store.close()


def test_the_feed_file_vector_in_formats_md():
    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "FORMATS.md"), encoding="utf-8").read()
    hexed = re.search(r"<!-- feed-vector:begin -->\s*```\n(.*?)```", doc, re.S).group(1).strip()
    pk = b"\xed" + bytes(range(32))
    saved = feedstate.Saved("00112233aabbccdd", {"0123456789abcdef" * 2: (2, [(pk, 2)])}, {pk: 7})
    assert feedstate.encode(saved).hex() == hexed and feedstate.decode(bytes.fromhex(hexed)) == saved


async def test_a_feed_the_relay_refuses_is_given_up_at_once_one_it_cannot_reach_waits_its_grace():
    """FEED_GRACE is for a relay that is restarting: it cannot be reached, or a proxy in front of it says
    so (502/503), or it answers late. A relay that answers and refuses the feed (a 500, an answer that
    cannot be read, no feed at all any more) is not restarting: waiting the grace delayed every change its
    followers would otherwise read from the heads by up to a minute. They now read heads at once."""
    from sessiond.stores.errors import ServerError, StoreTimeout, StoreUnreachable

    for failure, grace in (
        (StoreUnreachable("refused"), True),
        (StoreTimeout("late"), True),
        (ServerError("bad gateway", status=502), True),
        (ServerError("internal", status=500), False),
        (ServerError("gateway timeout: a proxy shorter than the long-poll", status=504), False),
        (ServerError("an answer we cannot read"), False),
        (None, False),  # 404: the relay has no feed any more
    ):

        async def call(*args, failure=failure, **kw):
            if failure is None:
                return type("Reply", (), {"status": 404})()
            raise failure

        feed = s5feed.ChangeFeed(call, "relay.test", 10.0)
        feed.start()
        try:
            await eventually(lambda feed=feed: feed._failing_since is not None, what="the feed's poll failing")
            assert feed.healthy is grace, failure
            assert (feed.changes_since(None) is None) is (not grace)
        finally:
            await feed.stop()


async def test_a_refused_head_write_with_a_bad_key_is_not_followed_nor_kept(tmp_path):
    """A POST /s5/registry whose pk is no Ed25519 key (a buggy app, or anyone with an account) was refused
    by the registry, but only after the account's feed followed that pk: the relay then wrote it into its
    feed file at a clean stop, and at the next start the file did not read ("a head key that is not
    Ed25519"): every account's follows were lost, every follower reset. Now the pk is checked first: the
    write is refused, nothing is followed, and the follows of the restart are kept."""
    data = str(tmp_path / "relay")
    served = await Served(data, open_registration=True).start()
    store = store_for(served, tmp_path)
    try:
        await store.set_head(head(1, SigningKey(b"\x31" * 32)))
        good = head(2, SigningKey(b"\x32" * 32))
        for pk in (b"\x00" + good.pk[1:], good.pk[:32], good.pk + b"\x00"):
            doc = {"pk": b64url(pk), "revision": 2, "data": b64url(good.data), "signature": b64url(good.signature)}
            status, body = await raw(served, "POST", "/s5/registry", store._token, json=doc)
            assert status == 400 and b"pk must be" in body, (status, body)
        (view,) = served.relay.feed._views.values()
        assert list(view.heads) == [head(1, SigningKey(b"\x31" * 32)).pk]
        token = store._token
    finally:
        await store.close()
        await served.stop()
    again = await Served(data).start()
    try:
        assert list(again.relay.feed._views) == list(served.relay.feed._views)  # the file read: follows kept
        doc = await feed_of(again, token, "since=0")
        assert doc["epoch"] == served.relay.feed.epoch
    finally:
        await again.stop()
