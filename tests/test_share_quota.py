"""A shared session's token quota across two devices (two daemons over one folder store): the quota set on
one device holds on the other, the tokens add up on both, and a level another device's writes brought the
quota to is told on this one too."""

from __future__ import annotations

import threading

import pytest

from sessiond.client import ApiError


@pytest.fixture
def pair(make_daemon, store_dir):
    url = "file://" + store_dir
    return make_daemon(url).start(), make_daemon(url).start()


def test_a_quota_set_on_one_device_holds_on_the_other_and_counts_both(pair):
    a, b = pair
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="q", policy={"token_quota": 100})["id"]
    ca.append(sid, "user", "from a", tokens=10)
    cb.import_code(ca.share(sid, write=True)["code"])
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


def test_a_level_that_another_devices_writes_brought_the_quota_to_is_told_here(pair):
    a, b = pair
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="q", policy={"token_quota": 100})["id"]
    ca.append(sid, "user", "from a", tokens=10)
    cb.import_code(ca.share(sid, write=True)["code"])
    seen: list[dict] = []
    subscribed, done = threading.Event(), threading.Event()
    stream = ca.events()

    def read():
        subscribed.set()
        for ev in stream:
            if ev.get("session") == sid and ev["type"] == "session.synced":
                seen.append(ev)
                if ev.get("new"):
                    done.set()
                    return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        assert subscribed.wait(10)
        cb.append(sid, "user", "from b", tokens=65)  # 75 %: warning
        cb.sync(sid, wait=True)
        ca.sync(sid, wait=True)
        assert done.wait(20), seen
    finally:
        stream.close()
        t.join(10)
    assert ca.quota(sid)["level"] == "warning"
    # an app on A follows the quota by its events, as for its own appends' `messages.appended`
    assert seen[-1].get("quota_level") == "warning", seen
