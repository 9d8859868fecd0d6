"""A shared session's token quota across two devices (two daemons over one folder store): the quota set on
one device holds on the other, the tokens add up on both, and a level another device's writes brought the
quota to is told on this one too."""

from __future__ import annotations

import os
import threading

import pytest

from sessiond.client import ApiError


@pytest.fixture
def pair(make_daemon, store_dir):
    url = "file://" + store_dir
    return make_daemon(url).start(), make_daemon(url).start()


def quota_shared(pair, first_tokens: int):
    """A session of A's with a token quota of 100 and a first message of `first_tokens` tokens, imported by B
    read-write: (A's client, B's client, the session)."""
    a, b = pair
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="q", policy={"token_quota": 100})["id"]
    ca.append(sid, "user", "from a", tokens=first_tokens)
    cb.import_code(ca.share(sid, write=True)["code"])
    return ca, cb, sid


def test_a_quota_set_on_one_device_holds_on_the_other_and_counts_both(pair):
    ca, cb, sid = quota_shared(pair, 10)
    ca.update_session(sid, policy={"token_quota": 60})  # lowered after the share: the change syncs
    ca.sync(sid, wait=True)
    cb.sync(sid, wait=True)
    assert cb.quota(sid)["token_quota"] == 60
    cb.append(sid, "user", "from b", tokens=50)  # exactly 100 %: taken
    with pytest.raises(ApiError) as e:
        cb.append(sid, "user", "one more", tokens=0)
    assert e.value.status == 429 and e.value.code == "quota_exceeded"
    cb.sync(sid, wait=True)
    ca.sync(sid, wait=True)
    for c in (ca, cb):
        assert c.quota(sid)["tokens_used"] == 60 and c.quota(sid)["level"] == "exhausted"
        assert c.stats(sid)["tokens"] == 60 and c.stats()["tokens"] == 60
    with pytest.raises(ApiError) as e:  # B's synced messages spent it: A's next append is told so
        ca.append(sid, "user", "from a again", tokens=1)
    assert e.value.status == 429 and e.value.code == "quota_exceeded" and "used 60 of its 60" in e.value.message


def pulled_levels(c, sid: str, write) -> list[str]:
    """The quota levels that the session.synced events of `c`'s daemon carry, up to the pull that brings the
    messages `write()` (on another device, pushed by it) wrote to `sid` (a change it made before them may
    come in an earlier pull)."""
    levels: list[str] = []
    subscribed, done = threading.Event(), threading.Event()
    stream = c.events()

    def read():
        subscribed.set()
        for ev in stream:
            if ev.get("session") == sid and ev["type"] == "session.synced":
                levels.extend([ev["quota_level"]] if "quota_level" in ev else [])
                if ev.get("new"):
                    done.set()
                    return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        assert subscribed.wait(10)
        write()
        c.sync(sid, wait=True)
        assert done.wait(20), "no session.synced event bringing the write"
    finally:
        stream.close()
        t.join(10)
    return levels


def test_a_level_that_another_devices_writes_brought_the_quota_to_is_told_here(pair):
    ca, cb, sid = quota_shared(pair, 10)

    def b_writes(tokens: int):
        cb.append(sid, "user", "from b", tokens=tokens)
        cb.sync(sid, wait=True)

    # an app on A follows the quota by its events, as for its own appends' `messages.appended`
    assert pulled_levels(ca, sid, lambda: b_writes(65)) == ["warning"]  # 75 %
    assert ca.quota(sid)["level"] == "warning"
    assert pulled_levels(ca, sid, lambda: b_writes(5)) == []  # 80 %: still warning

    def b_raises():  # and a change of the quota by another device: the level may go down too
        cb.update_session(sid, policy={"token_quota": 1000})
        b_writes(1)

    assert pulled_levels(ca, sid, b_raises) == ["safe"]


def test_devices_writing_at_once_can_pass_the_quota_together_and_then_both_refuse(pair, store_dir):
    # each device judges the quota by what it holds: two appends made before they sync each fit, and together
    # pass it (README, "Tokens and quotas"); once synced, both count all of it and take nothing more
    ca, cb, sid = quota_shared(pair, 40)
    os.rename(store_dir, store_dir + ".away")  # the store out of reach (a share not mounted): neither sees the other
    try:
        ca.append(sid, "user", "a again", tokens=30)
        cb.append(sid, "user", "b meanwhile", tokens=50)
    finally:
        os.rename(store_dir + ".away", store_dir)
    for c in (ca, cb, ca):
        c.sync(sid, wait=True)
    for c in (ca, cb):
        q = c.quota(sid)
        assert (q["tokens_used"], q["remaining"], q["level"]) == (120, 0, "exhausted")
        with pytest.raises(ApiError) as e:
            c.append(sid, "user", "more", tokens=0)
        assert e.value.code == "quota_exceeded" and "used 120 of its 100" in e.value.message


def test_a_device_s_message_limit_is_its_own_and_a_pull_takes_what_others_wrote_past_it(make_daemon, store_dir):
    from conftest import started_with

    url = "file://" + store_dir
    a = started_with(lambda: make_daemon(url), max_messages_per_chat=3)
    b = make_daemon(url).start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="lim")["id"]
    ca.append(sid, "user", "from a")
    cb.import_code(ca.share(sid, write=True)["code"])
    cb.append_many(sid, [{"role": "user", "content": f"b{i}"} for i in range(4)])  # B has no such limit
    cb.sync(sid, wait=True)
    ca.sync(sid, wait=True)
    assert ca.get_session(sid)["message_count"] == 5  # nothing B wrote is left out here
    with pytest.raises(ApiError) as e:
        ca.append(sid, "user", "one more on a")
    assert e.value.status == 429 and e.value.code == "limit_reached" and "holds 5 messages" in e.value.message
    cb.append(sid, "user", "b goes on")  # B's own limits hold there


def test_a_cleanup_on_one_device_leaves_the_session_whole_on_the_others(make_daemon, store_dir):
    from conftest import wait_for

    url = "file://" + store_dir
    a, b, c = (make_daemon(url).start() for _ in range(3))
    ca, cb, cc = a.client(), b.client(), c.client()
    sid = ca.create_session(name="cl")["id"]
    ca.append(sid, "user", "from a")
    cb.import_code(ca.share(sid, write=True)["code"])
    ca.sync(sid, wait=True)
    wait_for(lambda: ca.cleanup(0.2, dry_run=True)["sessions"], timeout=10, what="the session idle on A")
    assert [s["id"] for s in ca.cleanup(0.2)["sessions"]] == [sid]
    cb.append(sid, "user", "from b")  # B sees nothing of it, and goes on
    cb.sync(sid, wait=True)
    assert cb.get_session(sid)["status"] == "active"
    assert any(d["writer"] and not d["this_device"] for d in cb.devices(sid)["devices"])  # A still a writer
    # A's log stays in the store: a code from B brings all of it, A's messages too, to a third device and to A
    for other in (cc, ca):
        other.import_code(cb.share(sid, write=True)["code"])
        assert [m["content"] for m in other.messages(sid)["messages"]] == ["from a", "from b"]
