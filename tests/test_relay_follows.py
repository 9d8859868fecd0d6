"""What an account's change feed follows survives a clean restart of the relay (relay/feedstate.py): the
same epoch, the same cursors, the same follows, so a daemon that followed the feed before the restart is
told only what changed after it, and reads no head it need not. A relay that did not stop cleanly, or
whose data an earlier version wrote, starts as before: a new epoch, each follower reset (a full round
once), nothing missed."""

from __future__ import annotations

import json
import os
import re
import stat

from nacl.signing import SigningKey

from sessiond.relay import feedstate
from sessiond.relay.feed import Feed
from sessiond.stores.s5 import b64url
from test_relay import Served, head, raw, store_for


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
    """A data folder an earlier version wrote (no feed file), a relay that did not stop cleanly, or a
    damaged file: the relay starts with a new epoch and no follows, as before; each follower's feed resets
    (its daemon reads every head it follows once, which follows them again) and the feed works from there."""
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
    for i, damage in enumerate((None, b"garbage", open(path, "rb").read()[:-1] + b"\0")):
        if damage is None:
            os.unlink(path)  # as an earlier version leaves its folder
        else:
            with open(path, "wb") as f:
                f.write(damage)
        again = await Served(data).start()
        store2 = store_for(again, tmp_path)
        store2._key, store2._token = store._key, token
        try:
            assert not os.path.exists(path)
            doc = await feed_of(again, token, f"since={before['cursor']}&epoch={before['epoch']}")
            assert doc["reset"] and doc["epoch"] != before["epoch"] and not doc["changes"]
            assert await store2.get_head(head(1).pk) is not None  # read: followed again
            await store2.set_head(head(2 + i))
            after = await feed_of(again, token, f"since={doc['cursor']}&epoch={doc['epoch']}")
            assert not after["reset"] and pks(after) == {b64url(head(1).pk)}
        finally:
            await store2.close()
            await again.stop()
    await store.close()


def test_the_feed_file_vector_in_formats_md():
    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "FORMATS.md"), encoding="utf-8").read()
    hexed = re.search(r"<!-- feed-vector:begin -->\s*```\n(.*?)```", doc, re.S).group(1).strip()
    pk = b"\xed" + bytes(range(32))
    saved = feedstate.Saved("00112233aabbccdd", {"0123456789abcdef" * 2: (2, [(pk, 2)])}, {pk: 7})
    assert feedstate.encode(saved).hex() == hexed and feedstate.decode(bytes.fromhex(hexed)) == saved
