"""Follow cost where a store has no change feed: the request-rate cap on head reads (stores/http.py)
and the batched head read (Store.get_heads), against the loopback Kubo node and S5 portal."""

from __future__ import annotations

import asyncio
import time

import pytest
from nacl.signing import SigningKey

from servers.kubo import start_node
from servers.s5portal import start_portal
from sessiond.stores import StoreError, configure, open_store
from sessiond.stores.cid import digest
from sessiond.stores.errors import ServerError
from sessiond.stores.gateway import GatewayStore
from sessiond.stores.http import RateCap, RetryPolicy
from sessiond.stores.kubo import KuboStore
from sessiond.stores.registry import RegistryEntry
from sessiond.stores.s5 import S5Store

FAST = RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.02)


def heads(n: int) -> list[RegistryEntry]:
    return [RegistryEntry.create(SigningKey(bytes([i + 1]) * 32), 1, b"\x1e" + digest(b"%d" % i)) for i in range(n)]


async def test_rate_cap_spaces_requests():
    cap = RateCap(50, burst=5)
    t = time.monotonic()
    for _ in range(5):
        await cap.acquire()
    assert cap.waited == 0  # the burst: no wait (the cap's count: a busy machine's clock may move meanwhile)
    for _ in range(10):
        await cap.acquire()
    took = time.monotonic() - t
    assert took >= 10 / 50 - 0.01  # ten more at 50/s: at least 0.2 s
    # ten callers at once: each reserves its slot as it comes (no await before), so they wait 0.02, 0.04, ...
    # 0.2 s (1.1 s in all). One after the other, as above, a busy machine's late wake-ups refill the bucket
    # meanwhile: the waits counted shrink with every sleep overslept (0.06 s of 0.2 seen under load)
    waited = cap.waited
    await asyncio.gather(*(cap.acquire() for _ in range(10)))
    assert cap.waited - waited > 0.1
    uncapped = RateCap(None)
    for _ in range(1000):
        await uncapped.acquire()
    assert uncapped.waited == 0
    with pytest.raises(ValueError):
        RateCap(0)


async def test_kubo_head_reads_are_capped_and_batched():
    n, rpc, gw = await start_node()
    url = f"ipfs+http://127.0.0.1:{rpc.port}"
    writer = KuboStore(url, retry=FAST, max_requests_per_second=None)
    follower = KuboStore(url, retry=FAST, max_requests_per_second=20)
    gateway = GatewayStore(f"ipfs+gateway+http://127.0.0.1:{gw.port}", retry=FAST, max_requests_per_second=20)
    try:
        es = heads(30)
        for e in es[:25]:
            await writer.set_head(e)
        pks = [e.pk for e in es]
        for store in (follower, gateway):
            t = time.monotonic()
            # a pk asked twice is read once; all 30 in flight at once, each asking the cap before any answer
            # arrives: with get_heads' default 4, a busy machine's slow answers refilled the bucket meanwhile
            # and no read waited (waited 0.0 seen under load)
            got = await store.get_heads(pks + pks[:3], concurrency=len(pks))
            took = time.monotonic() - t
            assert list(got) == pks
            assert [got[e.pk] for e in es[:25]] == es[:25] and all(got[e.pk] is None for e in es[25:])
            # 30 reads at 20/s with a burst of 20: the last 10 wait 0.5 s between them
            assert took >= 10 / 20 - 0.05, took
            assert store.http.cap.waited > 0
        # objects are not capped: a push is not slowed by the follower's cap
        waited = follower.http.cap.waited
        for i in range(40):
            await follower.put(b"object %d" % i)
        assert follower.http.cap.waited == waited
        # one head failing does not hide the others
        n.faults.status, n.faults.times = 502, 2
        got = await follower.get_heads(pks[:3], concurrency=1)
        assert isinstance(got[pks[0]], ServerError) and got[pks[1]] == es[1] and got[pks[2]] == es[2]
    finally:
        for s in (writer, follower, gateway):
            await s.close()
        await rpc.stop()
        await gw.stop()


async def test_s5_head_reads_capped_and_config_reaches_the_stores(tmp_path):
    portal, running = await start_portal()
    try:
        configure(max_requests_per_second=40)
        store = open_store(f"s5+http://127.0.0.1:{running.port}")
        assert isinstance(store, S5Store) and store.http.cap.rate == 40
        kubo = open_store("ipfs+http://127.0.0.1:1")
        assert kubo.http.cap.rate == 40
        await kubo.close()
        es = heads(50)
        t = time.monotonic()
        got = await store.get_heads([e.pk for e in es])
        assert all(v is None for v in got.values())
        assert time.monotonic() - t >= 10 / 40 - 0.05  # 50 reads, a burst of 40, then 40/s
        registry_reads = [p for m, p, _ in portal.requests if p == "/s5/registry"]
        assert len(registry_reads) == 50
        await store.close()
        with pytest.raises(StoreError, match="max_requests_per_second"):
            configure(max_requests_per_second=0)
        configure(max_requests_per_second=None)
        store = open_store(f"s5+http://127.0.0.1:{running.port}")
        assert store.http.cap.rate is None
        await store.close()
    finally:
        configure()
        await running.stop()


async def test_get_heads_default_on_the_folder_store(tmp_path):
    store = open_store(str(tmp_path / "store"))
    es = heads(3)
    await store.set_head(es[0])
    got = await store.get_heads([e.pk for e in es])
    assert got == {es[0].pk: es[0], es[1].pk: None, es[2].pk: None}
    assert await store.get_heads([]) == {}
    await store.unpin([digest(b"anything")])  # a folder keeps what it holds: no-op, no error


async def test_folder_store_lists_its_heads_again_only_when_the_folder_changed(tmp_path, monkeypatch):
    """A follower of a folder store asks for every head's version 4x a second: the listing is reused
    while the heads folder is unchanged (its mtime), and taken again when a head was written, when the
    folder had changed just before the last listing (a change in the same clock tick would not show),
    and after RELIST_EVERY."""
    import os

    from sessiond.stores import file as file_store

    store = file_store.FileStore(str(tmp_path / "store"))
    a, b = heads(2)
    await store.set_head(a)
    listed = []
    real_scandir = os.scandir
    folder = os.path.join(store.root, "heads")
    # the heads folder's listings only: the store's sweep of old temporary files, a thread its first write starts,
    # lists the objects folder whenever it gets a CPU (a loaded machine's run counted it: 3 listings, not 2)
    monkeypatch.setattr(
        file_store.os, "scandir", lambda p: (listed.append(p) if p == folder else None) or real_scandir(p)
    )

    def settle():  # the folder last changed 10 s ago
        old = time.time_ns() - 10_000_000_000
        os.utime(folder, ns=(old, old))

    fresh = await store.head_versions()  # just written: listed, and not kept
    assert set(fresh) == {a.pk} and await store.head_versions() is not fresh and len(listed) == 2
    settle()
    first = await store.head_versions()
    assert await store.head_versions() is first and len(listed) == 3  # unchanged: no listing
    await store.set_head(b)
    changed = await store.head_versions()
    assert set(changed) == {a.pk, b.pk} and len(listed) == 4
    settle()
    again = await store.head_versions()
    monkeypatch.setattr(file_store, "RELIST_EVERY", 0.0)
    assert await store.head_versions() is not again and len(listed) == 6
