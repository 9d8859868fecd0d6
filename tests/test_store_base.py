"""The Store interface's defaults, through a store that implements only what it must."""

from __future__ import annotations

import asyncio

import pytest

from sessiond.storage.model import LogRun
from sessiond.stores import ObjectMissing, Store, StoreError, base
from sessiond.stores.cid import digest
from sessiond.sync import pagecut as pagecut_mod
from sessiond.sync import pages as pages_mod
from sessiond.sync import push as push_mod
from sessiond.sync.pull import LogReader
from sessiond.sync.push import LogWriter
from test_log import DEV, SID, records

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")  # a put never awaited fails the test


class PutOnly(Store):
    """Objects in memory, written one put() at a time: no put_many of its own (as S5 and Kubo)."""

    url = "memory://"

    def __init__(self) -> None:
        self.objects: dict[bytes, bytes] = {}
        self.in_flight = 0
        self.most_in_flight = 0
        self.fail_after: int | None = None  # puts that succeed before every later one fails

    async def put(self, data: bytes) -> bytes:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # a turn of the loop, as a network write takes: the others start
            if self.fail_after is not None and len(self.objects) >= self.fail_after:
                raise StoreError("memory://: full (test)")
            h = digest(data)
            self.objects[h] = data
            return h
        finally:
            self.in_flight -= 1

    async def get(self, h: bytes) -> bytes:
        if h not in self.objects:
            raise ObjectMissing(h)
        return self.objects[h]

    async def has(self, h: bytes) -> bool:
        return h in self.objects

    async def get_head(self, pk: bytes):
        return None

    async def set_head(self, entry) -> None:
        return None


def _run(monkeypatch) -> LogRun:
    """A run of many small pages, so that one write_pages is one put_many of many objects."""
    monkeypatch.setattr(pages_mod, "PAGE_MAX", 4_000)
    monkeypatch.setattr(pagecut_mod, "PAGE_MAX", 4_000)
    monkeypatch.setattr(push_mod, "PAGE_MAX", 4_000)
    return LogRun.from_records(records([("main", "user", f"{i} " + "words " * 40, None, None) for i in range(300)]))


async def test_a_push_to_a_store_without_put_many_goes_through_the_default(monkeypatch):
    """Every object arrives (the log reads back), written a bounded few at a time."""
    run, store = _run(monkeypatch), PutOnly()
    writer = LogWriter(SID, DEV, bytes(range(32)), store)
    entries = await writer.write_pages(run)
    assert len(entries) > base.PUT_CONCURRENCY * 2 and writer.written.objects == len(entries) == len(store.objects)
    assert store.most_in_flight == base.PUT_CONCURRENCY
    ops = await LogReader(SID, DEV, store).ops(entries)
    assert [o.seq for o in ops] == list(range(1, len(run) + 1))


async def test_the_default_put_many_fails_with_the_first_error_and_leaves_nothing_writing(monkeypatch):
    run, store = _run(monkeypatch), PutOnly()
    store.fail_after = 5
    with pytest.raises(StoreError, match="full"):
        await LogWriter(SID, DEV, bytes(range(32)), store).write_pages(run)
    assert store.in_flight == 0 and len(store.objects) == 5
