"""A store that answers 429 or 503 with a Retry-After (seconds, or an HTTP-date) is not asked again
before then: not by the push queue's retries (nor by `sessiond sync`, which otherwise skips the
backoff), not by a mirror's catch-up, not by a follower's reads; a wish past the cap is capped.
`sessiond sync --wait` says that it waits for the store's Retry-After, and ends at once with a clear
message when that wait is longer than its --timeout, instead of hanging silently."""

from __future__ import annotations

import asyncio
import email.utils
import time

import pytest

from conftest import DaemonProc, eventually, follower_pair, run_cli, wait_for
from servers.s5portal import Portal, Running, Threaded, make_app
from sessiond.storage.database import Database
from sessiond.stores.cid import digest
from sessiond.stores.errors import RateLimited
from sessiond.stores.http import RetryPolicy, retry_after_seconds
from sessiond.stores.s5 import S5Store
from sessiond.sync.mirror import MirrorStore
from sessiond.sync.schedule import PushQueue

FAST = RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.05)
MAX_SERVER_WAIT = 900.0  # stores/errors.py: the longest Retry-After honoured


@pytest.fixture
def portal():
    p = Portal()
    server = Threaded(make_app(p)).start()
    p.authority = f"127.0.0.1:{server.port}"
    yield p, server
    server.stop()


def refuse(p: Portal, retry_after: str, times: int = 10**6, status: int = 429) -> None:
    p.faults.retry_after, p.faults.status, p.faults.times = retry_after, status, times


def state(d: DaemonProc, sid: str) -> dict:
    with d.client() as c:
        return c.sync(sid, wait=False, timeout=1)["sessions"][sid]


def http_date(seconds_ahead: float) -> str:
    return email.utils.formatdate(time.time() + seconds_ahead, usegmt=True)


@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [("120", 100, 121), ("date+150", 100, 151), ("86400", MAX_SERVER_WAIT - 30, MAX_SERVER_WAIT)],
    ids=["seconds", "http-date", "capped"],
)
async def test_the_push_queue_waits_for_the_store_s_retry_after(tmp_path, retry_after, low, high):
    p = Portal()
    running = await Running(make_app(p)).start()
    p.authority = f"127.0.0.1:{running.port}"
    if retry_after.startswith("date+"):  # an HTTP-date, made now (not when the tests were collected)
        retry_after = http_date(float(retry_after[5:]))
    refuse(p, retry_after, status=503)
    store = S5Store(f"s5+http://{p.authority}", account_seed=b"\x05" * 32, retry=FAST, timeout=5)
    failed = asyncio.Event()
    waits: list[float] = []

    async def on_failed(sid, exc, delay):
        assert isinstance(exc, RateLimited)
        waits.append(delay)
        failed.set()

    queue = PushQueue(lambda sid: store.put(b"an object"), gap=0, failed=on_failed)
    queue.start()
    try:
        queue.notify("s1")
        await asyncio.wait_for(failed.wait(), 10)
        asked = len(p.requests)
        loop = asyncio.get_running_loop()
        assert low <= waits[0] <= high, waits
        assert low <= queue.retry_at["s1"] - loop.time() <= high
        queue.now("s1")  # `sessiond sync`: skips our own backoff, never the store's Retry-After
        await asyncio.sleep(0)  # one turn of the loop: a worker would take the session now
        assert "s1" not in queue._queued and len(p.requests) == asked
        assert low - 5 <= queue.retry_at["s1"] - loop.time() <= high
    finally:
        await queue.stop()
        await store.close()
        await running.stop()


def test_sync_wait_ends_at_once_when_the_store_asks_for_longer_than_its_timeout(portal, tmp_path):
    p, server = portal
    refuse(p, "120")
    d = DaemonProc(str(tmp_path / "home"), f"s5+http://127.0.0.1:{server.port}").start()
    try:
        with d.client() as c:
            sid = c.create_session(name="limited", initial_messages=[{"role": "user", "content": "hi"}])["id"]
        st = wait_for(lambda: (s := state(d, sid)).get("last_error") and s, timeout=20, what="the push refused")
        assert 100 <= st["retry_in"] <= 120, st  # main: our own backoff (0.2 s, 0.4 s, ...), not the store's
        asked = len(p.requests)
        t0 = time.monotonic()
        res = run_cli(d.home, "sync", sid, "--wait", "--timeout", "20")
        took = time.monotonic() - t0
        assert res.returncode == 1, res
        assert "Retry-After" in res.stdout and "--timeout 20" in res.stdout, res.stdout
        assert "Retry-After" in res.stderr and "past --timeout" in res.stderr, res.stderr
        assert took < 15, took  # not the whole --timeout: waiting could not help
        assert len(p.requests) == asked  # and the store was not asked again meanwhile
    finally:
        d.stop()


def test_sync_wait_says_it_waits_for_the_store_s_retry_after_then_completes(portal, tmp_path):
    p, server = portal
    d = DaemonProc(str(tmp_path / "home"), f"s5+http://127.0.0.1:{server.port}").start()
    try:
        refuse(p, "4", times=1)  # (long enough for the CLI's start on a loaded machine: it sees the wait under way)
        with d.client() as c:
            sid = c.create_session(name="limited", initial_messages=[{"role": "user", "content": "hi"}])["id"]
        wait_for(lambda: p.faults.times == 0, timeout=20, what="the store's 429")
        res = run_cli(d.home, "sync", sid, "--wait", "--timeout", "60")
        assert res.returncode == 0 and "all pushed and pulled" in res.stdout, res
        assert f"{sid}: waiting" in res.stderr and "for the store's Retry-After" in res.stderr, res.stderr
    finally:
        d.stop()


async def test_a_mirror_leaves_a_store_alone_for_its_retry_after(tmp_path):
    portals, servers, stores = [], [], []
    for i in range(2):
        p = Portal()
        running = await Running(make_app(p)).start()
        p.authority = f"127.0.0.1:{running.port}"
        refuse(p, "120" if i == 0 else http_date(200))
        portals.append(p)
        servers.append(running)
        stores.append(S5Store(f"s5+http://{p.authority}", account_seed=b"\x06" * 32, retry=FAST, timeout=5))
    db = await Database.open(str(tmp_path / "db.sqlite"))
    mirror = MirrorStore(stores, db.outbox, timeout=5)
    await mirror.started()
    try:
        with pytest.raises(RateLimited) as err:
            await mirror.put(b"to both")
        assert err.value.retry_after is not None and 100 <= err.value.retry_after <= 120
        rows = await mirror.status()
        assert [r["pending"] for r in rows] == [1, 1]  # kept for each store
        assert 100 <= rows[0]["retry_in"] <= 120 and 150 <= rows[1]["retry_in"] <= 200, rows
        asked = [len(p.requests) for p in portals]
        mirror.wake()  # the drain loop looks again now: it must leave both alone
        for _ in range(20):
            await asyncio.sleep(0)
        assert [len(p.requests) for p in portals] == asked
    finally:
        await mirror.close()
        await db.close()
        for running in servers:
            await running.stop()


def test_a_follower_leaves_a_store_alone_for_its_retry_after(portal, tmp_path):
    """The follower's reads (the change feed it looks for, the heads of the sessions it follows) honour a
    Retry-After as the pushes do: a store asking for two minutes is not asked again meanwhile."""
    p, server = portal
    a, b, sid = follower_pair(f"s5+http://127.0.0.1:{server.port}", tmp_path)
    try:
        a.stop()  # only B asks the store from now on
        refuse(p, "120")
        asked = len(p.requests)
        wait_for(lambda: len(p.requests) > asked, timeout=10, what="B's next read of the store")
        first = wait_for(lambda: state(b, sid).get("pull_error"), timeout=10, what="B's pull refused")
        assert "rate-limiting us" in first, first
        since = len(p.requests)
        time.sleep(3)  # B's polls (every 0.25 s) and its retries of the failed pull (every 2 s) go on meanwhile
        said = [path for _, path, _ in p.requests[since:]]
        # main: the heads read again at each retry of the failed pull (every 2 s), and the change feed
        # looked for at every poll (4 a second) if its first look met the 429
        assert said == [], said
        st = state(b, sid)
        assert "rate-limiting us" in st["pull_error"] and "Retry-After" in st["pull_error"], st
    finally:
        a.stop()
        b.stop()


async def test_no_request_goes_to_a_store_before_its_retry_after_is_over():
    p = Portal()
    running = await Running(make_app(p)).start()
    p.authority = f"127.0.0.1:{running.port}"
    store = S5Store(
        f"s5+http://{p.authority}", retry=RetryPolicy(attempts=2, backoff=0.01, max_retry_after=0.5), timeout=5
    )
    try:
        refuse(p, "2", times=1)  # longer than the client waits inside one request: it gives up at once
        with pytest.raises(RateLimited):
            await store.get_head(b"\xed" + b"\x01" * 32)
        asked = len(p.requests)
        with pytest.raises(RateLimited) as err:  # another request meanwhile: refused here, not sent
            await store.get_head(b"\xed" + b"\x02" * 32)
        assert 1 <= err.value.retry_after <= 2 and "not sent" in str(err.value), err.value
        assert len(p.requests) == asked
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5 and len(p.requests) == asked:
            try:
                assert await store.get_head(b"\xed" + b"\x02" * 32) is None  # sent once the wait is over
            except RateLimited:
                await asyncio.sleep(0.1)
        assert len(p.requests) == asked + 1 and time.monotonic() - t0 >= 1.0
    finally:
        await store.close()
        await running.stop()


def test_a_retry_after_in_digits_float_refuses_is_no_retry_after():
    """str.isdigit takes '²' (a store or provider whose header says Retry-After: ² in UTF-8), which float()
    refuses: the ValueError came out of the request instead of the store's answer. Such a value is no
    Retry-After, as any other that is neither seconds nor a date."""
    assert retry_after_seconds("\u00b2") is None
    assert retry_after_seconds(" 120 ") == 120.0


def test_a_retry_after_of_0_is_no_wait_the_store_asked_for(portal, tmp_path):
    """A store storming 429s with `Retry-After: 0` asks for no wait at all: the wait between the tries is the
    daemon's own backoff. On main that backoff was said as the store's (`retry_after` true, "next try in 6 s as
    the store asked (Retry-After)"), kept `sessiond sync` from skipping it, and ended `sync --wait` early, as
    for a wish past its --timeout, which the store never made; it tries until its --timeout now, as for any
    store failing that waiting may mend, and the write goes once the store takes it."""
    p, server = portal
    d = DaemonProc(str(tmp_path / "home"), f"s5+http://127.0.0.1:{server.port}").start()
    try:
        with d.client() as c:
            sid = c.create_session(name="limited", initial_messages=[{"role": "user", "content": "hi"}])["id"]
        assert run_cli(d.home, "sync", sid, "--wait", "--timeout", "20").returncode == 0
        refuse(p, "0")
        with d.client() as c:
            c.append(sid, "user", "during the storm")
        t0 = time.monotonic()
        res = run_cli(d.home, "sync", sid, "--wait", "--timeout", "10")
        took = time.monotonic() - t0
        assert res.returncode == 1, res
        said = res.stdout + res.stderr
        assert "as the store asked" not in said and "Retry-After) to wait" not in said, said
        assert "for the store's Retry-After" not in said, said
        assert took >= 9.5, (took, said)  # main: ended at ~6 s, "the store asked (Retry-After) to wait 6 s"
        assert not state(d, sid).get("retry_after"), state(d, sid)
        p.faults.times = 0
        res = run_cli(d.home, "sync", sid, "--wait", "--timeout", "30")
        assert res.returncode == 0 and "all pushed and pulled" in res.stdout, res
    finally:
        d.stop()


async def test_a_429_storm_with_retry_after_0_is_not_tried_back_to_back():
    """Within one request, a 429 whose Retry-After is shorter than the client's own backoff was tried again
    after exactly that: `Retry-After: 0` sent its tries back to back, with no pause at all (4 requests within a
    few ms, for each session a push worker takes, a store rate-limiting every one of them, where a 500 storm
    is tried after the backoff). The wait between tries is the longer of the store's and the backoff's now."""
    p = Portal()
    running = await Running(make_app(p)).start()
    p.authority = f"127.0.0.1:{running.port}"
    store = S5Store(f"s5+http://{p.authority}", retry=RetryPolicy(attempts=3, backoff=2.0, max_backoff=2.0), timeout=5)
    try:
        refuse(p, "0")
        t0 = time.monotonic()
        with pytest.raises(RateLimited):
            await store.get_head(b"\xed" + b"\x03" * 32)
        took = time.monotonic() - t0
        assert len(p.requests) == 3
        assert took >= 2 * 1.0, took  # two waits of the jittered backoff (1 to 2 s each); main: a few ms
    finally:
        await store.close()
        await running.stop()


async def test_a_mirror_store_asking_for_a_short_wait_holds_no_write_and_is_said_as_rate_limiting(tmp_path):
    """One store of a mirror answering 429 with a Retry-After its HTTP client waits for inside the request (up to
    30 s): the write another store took at once was held LAG (5 s) for it, and the store was then failed as one
    that did not answer (\"no answer 5 s after another store of the mirror took the write\", a timeout, its
    Retry-After lost: the drain asked again after its own short backoff). A mirror's stores are not waited for
    inside a request now: the store is failed at once as rate-limiting, with its wait, and what it missed goes
    to its outbox, sent once that wait is over."""
    portals, servers, stores = [], [], []
    for _ in range(2):
        p = Portal()
        running = await Running(make_app(p)).start()
        p.authority = f"127.0.0.1:{running.port}"
        portals.append(p)
        servers.append(running)
        retry = RetryPolicy(attempts=4, backoff=0.01, max_backoff=0.05)  # (max_retry_after: 30 s, the default)
        stores.append(S5Store(f"s5+http://{p.authority}", account_seed=b"\x07" * 32, retry=retry, timeout=10))
    db = await Database.open(str(tmp_path / "db.sqlite"))
    mirror = MirrorStore(stores, db.outbox, timeout=10)
    await mirror.started()
    try:
        await mirror.put(b"before")  # (each logged in)
        refuse(portals[1], "4")
        t0 = time.monotonic()
        await mirror.put(b"to both")
        took = time.monotonic() - t0
        assert took < 2, took  # main: 5 s (LAG)
        rows = await mirror.status()
        assert rows[1]["failure"] == "rate-limiting us" and rows[1].get("retry_after"), rows  # main: timed out
        assert 2 <= rows[1]["retry_in"] <= 4 and rows[1]["pending"] == 1, rows
        portals[1].faults.times = 0
        await eventually(lambda: mirror.health[stores[1].url].pending == 0, 15, what="the outbox sent")
        assert await stores[1].get(digest(b"to both")) == b"to both"
    finally:
        await mirror.close()
        await db.close()
        for running in servers:
            await running.stop()
