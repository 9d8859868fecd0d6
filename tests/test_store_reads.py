"""A folder store's reads (stores/fileread.py): on the store's own reader thread, not through the event
loop's default executor, whose hand-over cost ~60 us of CPU per read against ~7.5 us for the read
itself (ten reads per session a follower imports: bench/results/profile-session.md)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest
from nacl.signing import SigningKey

from sessiond.stores import FileStore, ObjectMissing
from sessiond.stores.cid import digest
from sessiond.stores.registry import RegistryEntry

KEY = SigningKey(bytes(range(32)))
PK = b"\xed" + bytes(KEY.verify_key)


class NoExecutor(concurrent.futures.ThreadPoolExecutor):
    """A default executor that refuses work: what is handed to it is a failure of the test."""

    def submit(self, *a, **k):
        raise AssertionError("a folder store's read went through the loop's default executor")


async def test_reads_go_to_the_stores_reader_thread_not_the_default_executor(tmp_path):
    store = FileStore(str(tmp_path / "s"))
    h = await store.put(b"an object")
    await store.set_head(RegistryEntry.create(KEY, 1, b"\x1e" + h))
    token, _ = await store.head_changes(None)
    asyncio.get_running_loop().set_default_executor(NoExecutor())
    threads: set[str] = set()
    real = store._get_head_sync

    def get_head_sync(pk):
        threads.add(threading.current_thread().name)
        return real(pk)

    store._get_head_sync = get_head_sync
    assert (await store.get_head(PK)).revision == 1
    assert threads == {"sessiond-store-read"}
    assert await store.get(h) == b"an object"
    assert await store.has(h) and not await store.has(digest(b"absent"))
    assert await store.first_missing([h, digest(b"absent")]) == digest(b"absent")
    with pytest.raises(ObjectMissing):
        await store.get(digest(b"absent"))
    assert (await store.head_changes(token))[1] == set()
    assert PK in await store.head_versions()
    # several reads asked for in one turn: answered, each its own, in fewer wake-ups of the thread
    rounds = store._reader.rounds
    got = await asyncio.gather(*(store.get(h) for _ in range(20)), store.get_head(PK))
    assert got[:20] == [b"an object"] * 20 and got[20].revision == 1
    assert store._reader.rounds - rounds < 21
    store._get_head_sync = real
    asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(1))  # close()'s
    await store.close()


async def test_a_read_whose_caller_stopped_waiting_is_dropped_and_the_reader_goes_on(tmp_path):
    store = FileStore(str(tmp_path / "s"))
    h = await store.put(b"an object")
    release = threading.Event()

    def slow() -> str:
        release.wait(10)
        return "late"

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(store._reader.run(slow), 0.05)
    release.set()
    assert await store.get(h) == b"an object"  # the reader answers the next read; the late answer was dropped
    await store.close()
    assert await store.get(h) == b"an object"  # used again after close: started again
    await store.close()


def test_one_store_read_from_two_event_loops_one_after_the_other(tmp_path):
    store = FileStore(str(tmp_path / "s"))

    async def first() -> bytes:
        return await store.put(b"an object")

    h = asyncio.run(first())

    async def second() -> bytes:
        return await store.get(h)

    assert asyncio.run(second()) == b"an object"
    assert asyncio.run(second()) == b"an object"
