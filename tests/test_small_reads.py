"""Small files (session keys, write secrets, heads) are read without a buffer much larger than the file: Python's
os.read(fd, n) takes n bytes from the heap and shrinks them, and a 64 KiB buffer kept down to a 32-byte key left
a 64 KiB hole in glibc's heap for as long as the key stayed cached (the memory row's growth,
bench/results/profile-memory.md, twenty-first pass)."""

from __future__ import annotations

import asyncio
import os

import pytest
from nacl.signing import SigningKey

from sessiond.storage import fsutil
from sessiond.storage.fsutil import SMALL_READ, read_small
from sessiond.stores.file import FileStore
from sessiond.stores.registry import RegistryEntry
from sessiond.sync.keys import KeyStore


@pytest.fixture
def reads(monkeypatch):
    """The sizes asked of os.read, wherever it is called from."""
    asked: list[int] = []
    real = os.read

    def counted(fd, n):
        asked.append(n)
        return real(fd, n)

    monkeypatch.setattr(os, "read", counted)
    return asked


@pytest.mark.parametrize("size", [0, 1, 32, SMALL_READ - 1, SMALL_READ, SMALL_READ + 1, 5000, 300_000])
def test_read_small_reads_the_file_whole_with_buffers_of_its_size(tmp_path, reads, size):
    path = tmp_path / "f"
    data = os.urandom(size)
    path.write_bytes(data)
    assert read_small(str(path)) == data
    assert max(reads) <= max(SMALL_READ, size)  # never a buffer larger than the file (or 256 bytes)
    assert len(reads) <= 3


def test_read_small_of_a_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_small(str(tmp_path / "none"))
    assert fsutil.SMALL_READ + 33 <= 512  # the buffer and its header within Python's small-object allocator


def test_a_session_key_and_a_head_are_read_in_small_buffers(tmp_path, reads):
    keys = KeyStore(str(tmp_path / "keys"))
    made = keys.session_key("s1", create=True)
    fresh = KeyStore(str(tmp_path / "keys"))  # nothing cached: read from its file
    reads.clear()
    assert fresh.session_key("s1") == made
    assert reads and max(reads) <= SMALL_READ, reads

    async def head_read():
        store = FileStore(str(tmp_path / "store"))
        sk = SigningKey(b"\x01" * 32)
        await store.set_head(RegistryEntry.create(sk, 1, b"\x1e" + b"\x02" * 32))
        reads.clear()
        pk = b"\xed" + bytes(sk.verify_key)
        return store._get_head_sync(pk)

    assert asyncio.run(head_read()) is not None
    assert reads and max(reads) <= SMALL_READ, reads


def test_a_read_that_comes_back_short_before_the_end_is_read_on(tmp_path, monkeypatch):
    """A read interrupted by a signal after some bytes returns them short of the end: the rest is read, not
    taken for the end (a head cut short would read as damaged)."""
    path = tmp_path / "f"
    path.write_bytes(b"h" * 200)
    real, calls = os.read, []

    def short_first(fd, n):
        calls.append(n)
        return real(fd, 50 if len(calls) == 1 else n)

    monkeypatch.setattr(os, "read", short_first)
    assert read_small(str(path)) == b"h" * 200
