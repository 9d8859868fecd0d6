"""A follower's look for the relay's change feed (stores/s5.py, `_change_feed`) that fails (the store down,
answering 5xx) is remembered: the store is not asked for the feed again at every poll (4 a second) but
after a growing interval, and asked again once that is over (the feed, or its absence, found then)."""

from __future__ import annotations

import asyncio
import time

from conftest import follower_pair, wait_for
from servers.s5portal import Portal, Running, Threaded, make_app
from sessiond.stores import s5
from sessiond.stores.http import RetryPolicy
from sessiond.stores.s5 import S5Store

FEED = "/s5/registry/changes"


def feed_probes(p: Portal) -> int:
    return sum(1 for _, path, _ in list(p.requests) if path == FEED)


def other_requests(p: Portal) -> int:
    return sum(1 for _, path, _ in list(p.requests) if path != FEED)


def test_a_follower_does_not_look_for_the_feed_at_every_poll_of_a_failing_store(tmp_path):
    p = Portal()
    server = Threaded(make_app(p)).start()
    p.authority = f"127.0.0.1:{server.port}"
    a, b, _ = follower_pair(f"s5+http://{p.authority}", tmp_path)
    try:
        a.stop()
        b.stop()
        p.faults.status, p.faults.times = 500, 10**6  # every request from now on: a server error
        b.start()  # B's first look for the feed meets the 500
        wait_for(lambda: feed_probes(p) >= 1, timeout=15, what="B's first look for the change feed")
        since, reads = feed_probes(p), other_requests(p)
        # B's next polls (and retries of its failed pulls) read the heads, a few a second
        wait_for(lambda: other_requests(p) - reads >= 12, timeout=30, what="B's polls of the failing store")
        # main: a look for the feed at each of those polls too, for as long as the store fails
        assert feed_probes(p) - since <= 3, feed_probes(p) - since
    finally:
        a.stop()
        b.stop()
        server.stop()


async def test_a_failed_look_for_the_feed_is_tried_again_after_a_growing_interval(monkeypatch):
    monkeypatch.setattr(s5, "FEED_PROBE_BACKOFF", (0.3, 0.6))  # first wait, longest wait (s)
    p = Portal()
    running = await Running(make_app(p)).start()
    p.authority = f"127.0.0.1:{running.port}"
    store = S5Store(f"s5+http://{p.authority}", retry=RetryPolicy(attempts=1), timeout=5)
    try:
        p.faults.status, p.faults.times = 500, 10**6
        # each wait counts from its failed look, which comes after `t` (read before the call that makes it):
        # time read after the failure instead is short by whatever the process was held up meanwhile
        t = time.monotonic()
        assert await store.head_versions() is None
        assert feed_probes(p) == 1
        assert await store.head_versions() is None  # within the wait: not asked
        assert feed_probes(p) == 1
        for probes, wait in ((1, 0.3), (2, 0.6)):  # the second wait is longer (doubled, up to the longest)
            while feed_probes(p) == probes:
                await asyncio.sleep(0.02)  # a follower's poll interval, shortened
                asked = time.monotonic()  # a look this call makes fails after it
                assert await store.head_versions() is None
                assert time.monotonic() - t < 2, "not asked again after the wait"
            assert time.monotonic() - t >= wait
            t = asked
        p.faults.status = None  # the portal answers again: it has no feed (404), found at the next look
        t = time.monotonic()
        while feed_probes(p) == 3:
            await asyncio.sleep(0.02)  # a follower's poll interval, shortened
            assert await store.head_versions() is None
            assert time.monotonic() - t < 2
        assert await store.has_change_feed() is False and feed_probes(p) == 4  # remembered: not asked again
    finally:
        await store.close()
        await running.stop()
