"""Per-session tables whose size does not follow the number of sessions: a daemon with 10,000 sessions
keeps locks only for the few being pushed or rekeyed now (`KeyedLocks`), and caches of what it can
recompute or read again for the most recently used sessions only (`LRU`)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class KeyedLocks:
    """`async with locks(key):` one holder per key at a time. A key's lock is made on first use and
    dropped when its last holder or waiter leaves, so the table is as large as what is in use."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # key -> (lock, [holders + waiters])

    def __len__(self) -> int:
        return len(self._locks)

    def __contains__(self, key: object) -> bool:
        return key in self._locks

    def locked(self, key: str) -> bool:
        entry = self._locks.get(key)
        return entry is not None and entry[0].locked()

    @asynccontextmanager
    async def __call__(self, key: str) -> AsyncIterator[None]:
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0] and self._locks.get(key) is entry:
                del self._locks[key]


class LRU(Generic[K, V]):
    """A cache of at most `cap` entries; a get or set makes an entry the most recent, and the least
    recently used one falls out past the cap. Only for what can be had again (read, derived)."""

    def __init__(self, cap: int):
        self.cap = max(1, cap)
        self._d: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, key: object) -> bool:
        return key in self._d

    def get(self, key: K, default: V | None = None) -> V | None:
        try:
            self._d.move_to_end(key)
        except KeyError:
            return default
        return self._d[key]

    def __setitem__(self, key: K, value: V) -> None:
        self._d[key] = value
        self._d.move_to_end(key)
        if len(self._d) > self.cap:
            self._d.popitem(last=False)

    def pop(self, key: K, default: V | None = None) -> V | None:
        return self._d.pop(key, default)
