"""What a push and a share pay to check the store: a head's signature is checked once per exact bytes in
a process (an entry it signed itself is good by construction); a store's check that it still holds a log
(before a share, `sessiond sync`) asks once for all the log's objects; and a share's wait for its push
is woken by that push, not by every other session's."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from nacl.signing import SigningKey, VerifyKey

from conftest import eventually
from devices import count_calls
from faults import FaultyStore
from sessiond.stores import FileStore, registry
from sessiond.stores.registry import RegistryEntry, RegistryError
from sessiond.sync.heads import head_data

KEY = SigningKey(bytes(range(32)))


@pytest.fixture
def checks(monkeypatch):
    """Counts the Ed25519 signature checks made (VerifyKey.verify)."""
    seen = [0]
    real = VerifyKey.verify

    def verify(self, *a, **kw):
        seen[0] += 1
        return real(self, *a, **kw)

    monkeypatch.setattr(VerifyKey, "verify", verify)
    return seen


async def test_a_head_written_and_read_back_is_checked_once_at_most(tmp_path, checks):
    """The folder store checked each head it wrote twice (the new entry, then the stored one read back
    before the next write) and once more on each read of it: ~50 us of CPU each. An entry this process
    signed needs no check, nor bytes already checked."""
    store = FileStore(str(tmp_path / "store"))
    for rev in range(1, 6):
        await store.set_head(RegistryEntry.create(KEY, rev, head_data(bytes([rev]) * 32)))
        got = await store.get_head(b"\xed" + bytes(KEY.verify_key))
        assert got is not None and got.revision == rev
    assert checks[0] == 0
    await store.close()


def test_changed_bytes_are_checked_and_refused_and_others_checked_once(checks):
    """The memo is of exact bytes: an entry whose signature does not hold is refused every time, and an
    entry from elsewhere (not signed here) is checked the first time it is seen, not again."""
    other = SigningKey(bytes(range(1, 33)))
    raw = bytearray(RegistryEntry.create(other, 7, head_data(b"\x01" * 32)).to_bytes())
    registry._verified.clear()  # as if another process had signed it
    RegistryEntry.from_bytes(bytes(raw))
    RegistryEntry.from_bytes(bytes(raw))
    assert checks[0] == 1
    raw[-1] ^= 1  # the signature damaged
    for _ in range(2):
        with pytest.raises(RegistryError):
            RegistryEntry.from_bytes(bytes(raw))
    assert checks[0] == 3
    raw[-1] ^= 1
    raw[40] ^= 1  # the revision changed under the same signature
    with pytest.raises(RegistryError):
        RegistryEntry.from_bytes(bytes(raw))


def test_the_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(registry, "VERIFIED_KEPT", 10)
    for rev in range(1, 40):
        RegistryEntry.create(KEY, rev, head_data(b"\x02" * 32))
    assert len(registry._verified) == 10


async def test_a_folder_store_finds_a_missing_object_among_many_in_one_hop(tmp_path, monkeypatch):
    """A log's check before a share (and `sessiond sync`) asked the store has() once per object, each a
    hop to a thread and back: one per page and node of the log. A folder answers for them all at once."""
    store = FileStore(str(tmp_path / "store"))
    hashes = [await store.put(f"object {i}".encode()) for i in range(6)]
    hops = [0]
    real = store._reader.run

    def run(fn, *a):  # a hop to the store's reader thread (stores/fileread.py)
        hops[0] += 1
        return real(fn, *a)

    monkeypatch.setattr(store._reader, "run", run)
    assert await store.first_missing(hashes, timeout=5) is None
    os.unlink(store._obj_path(hashes[3]))
    assert await store.first_missing(hashes, timeout=5) == hashes[3]
    assert hops[0] == 2
    await store.close()


async def test_the_default_first_missing_asks_each_in_turn(tmp_path):
    """A store with no faster way (here a FaultyStore over a folder) gets the same answer from has()."""
    inner = FileStore(str(tmp_path / "store"))
    hashes = [await inner.put(f"object {i}".encode()) for i in range(3)]
    store = FaultyStore(inner)
    assert await store.first_missing(hashes, timeout=5) is None
    os.unlink(inner._obj_path(hashes[1]))
    assert await store.first_missing(hashes) == hashes[1]
    await inner.close()


async def test_a_wait_for_one_session_is_woken_by_its_own_push_only(devices):
    """sync_now(sid, wait=True) (every share) read its session's state again after every push of any
    session: under 16 clients ~10 wakes per share. Now only its own session's push wakes it."""
    a, _ = await devices.open(a={"push_delay": 0})
    db = devices.dba
    await a.start()
    sids = [(await db.create_session({"name": f"s{i}"}))["id"] for i in range(7)]
    target, others = sids[0], sids[1:]
    for s in sids:
        await db.append_messages(s, [{"role": "user", "content": f"first of {s}"}])
    gate = asyncio.Event()
    real_push = a.pusher.push

    async def push(sid, **kw):
        if sid == target:
            await gate.wait()  # the share's own push is slow; the others' end meanwhile
        return await real_push(sid, **kw)

    a.pusher.push = push
    looks = count_calls(db, "all_sync_states")
    began = time.monotonic()  # (the wait's first look comes after)
    waiting = asyncio.create_task(a.sync_now(target, wait=True, timeout=30))
    await eventually(lambda: [target] in looks, what="the wait's first look")
    for s in others:
        a.pushes.now(s)

    async def others_pushed() -> bool:
        states = await db.all_sync_states(others)
        return all(states[s]["pushed_seq"] >= 1 for s in others)

    await eventually(others_pushed, timeout=10, what="the other sessions pushed")
    gate.set()
    res = await asyncio.wait_for(waiting, 30)
    span = time.monotonic() - began
    assert res["pushed"]
    own = [c for c in looks if c == [target]]
    # the first look, the one after its own push, and one per 0.5 s of the wait (its timer) at most. The others'
    # pushes take ~0.1 s here, seconds on a loaded machine (each 0.5 s of it one look more): the bound is the
    # span's. Six looks more at once (one per other session's push) is what it catches.
    assert len(own) <= max(4, 2 + int(span / 0.5)), (own, span)


async def test_a_head_is_read_without_python_file_objects(tmp_path, monkeypatch):
    """A head is read by the folder store's writer thread before each head it writes, and by get_head:
    with os.open/os.read (four system calls) instead of open() (seven: fstat, ioctl, lseek...), each a
    GIL hand-over with the event loop's thread."""
    from sessiond.stores import file as file_module

    store = FileStore(str(tmp_path / "store"))
    entry = RegistryEntry.create(KEY, 1, head_data(b"\x03" * 32))
    await store.set_head(entry)

    def no_open(*a, **kw):
        raise AssertionError("a Python file object opened")

    monkeypatch.setattr(file_module, "open", no_open, raising=False)
    assert await store.get_head(entry.pk) == entry
    assert await store.get_head(b"\xed" + bytes(32)) is None
    await store.set_head(RegistryEntry.create(KEY, 2, head_data(b"\x04" * 32)))
    await store.close()
