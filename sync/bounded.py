"""Per-session tables whose size does not follow the number of sessions: a daemon with 10,000 sessions
keeps locks only for the few being pushed or rekeyed now (`KeyedLocks`), the runs under way of what one run
answers for every caller asking meanwhile (`KeyedRuns`), and caches of what it can
recompute or read again for the most recently used sessions only (`LRU`)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
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


class _CutShort(Exception):
    """A run of KeyedRuns whose caller was cancelled: one of those that waited for it runs it anew."""


class KeyedRuns(Generic[V]):
    """`await runs(key, make)`: make() run for `key`, unless a run for it is under way: then that run's result (or
    its exception) is taken instead, nothing run. At most one run per key at a time, and the table holds only the
    keys being run. A run cut short (its caller cancelled) is run anew by one of those that waited for it; a waiter
    cancelled leaves the run alone (shielded)."""

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._running)

    def __contains__(self, key: object) -> bool:
        return key in self._running

    async def __call__(self, key: str, make: Callable[[], Awaitable[V]]) -> V:
        while (running := self._running.get(key)) is not None:
            try:
                return await asyncio.shield(running)
            except _CutShort:
                continue  # (its caller was cancelled: run here, unless another waiter took it up first)
        done: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._running[key] = done
        try:
            result = await make()
        except asyncio.CancelledError:
            done.set_exception(_CutShort())
            done.exception()  # (retrieved: with no waiter, asyncio would log it as never retrieved)
            raise
        except BaseException as exc:
            done.set_exception(exc)
            done.exception()
            raise
        finally:
            del self._running[key]
        done.set_result(result)
        return result


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

    def held(self) -> list[K]:
        """The keys held, the least recently used first (none made more recent)."""
        return list(self._d)
