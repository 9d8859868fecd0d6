"""A store wrapper that fails the way real stores fail: down, hanging, slow, lying."""

from __future__ import annotations

import asyncio

from sessiond.stores import ObjectMissing, Store, StoreError


class FaultyStore(Store):
    def __init__(self, inner: Store):
        self.inner = inner
        self.url = "faulty+" + inner.url
        self.mode: str | None = None  # None, "down", "hang", "slow", "flip-get", "flip-put", "vanish", "rollback"
        self.fail_set_head = 0  # fail this many set_head calls (after the objects went in)
        self.calls = 0
        self.list_heads = False
        self._old_heads: dict[bytes, object] = {}

    async def _gate(self) -> None:
        self.calls += 1
        if self.mode == "down":
            raise StoreError("store is down (injected)")
        if self.mode == "hang":
            await asyncio.sleep(3600)  # the fault itself (a store that never answers), not a wait
        if self.mode == "slow":
            await asyncio.sleep(0.05)  # the fault itself (a slow store), not a wait

    async def put(self, data: bytes) -> bytes:
        await self._gate()
        if self.mode == "flip-put":
            h = await self.inner.put(data)
            # store damaged bytes under the right name: a store that corrupts at rest
            path = self.inner._obj_path(h)  # type: ignore[attr-defined]
            raw = bytearray(open(path, "rb").read())
            raw[len(raw) // 2] ^= 0x01
            open(path, "wb").write(bytes(raw))
            return h
        return await self.inner.put(data)

    async def get(self, h: bytes) -> bytes:
        await self._gate()
        if self.mode == "vanish":
            raise ObjectMissing(h)
        data = await self.inner.get(h)
        if self.mode == "flip-get":
            raw = bytearray(data)
            raw[0] ^= 0x80
            return bytes(raw)
        return data

    async def has(self, h: bytes) -> bool:
        await self._gate()
        return await self.inner.has(h)

    async def head_versions(self):
        # with list_heads, the listing works whatever the mode (a folder listing that succeeds while
        # reads fail); without, this store cannot tell which heads changed, like a remote store
        return await self.inner.head_versions() if self.list_heads else None

    async def get_head(self, pk: bytes):
        await self._gate()
        if self.mode == "rollback" and pk in self._old_heads:
            return self._old_heads[pk]
        return await self.inner.get_head(pk)

    async def set_head(self, entry) -> None:
        await self._gate()
        if self.fail_set_head:
            self.fail_set_head -= 1
            raise StoreError("set_head failed (injected)")
        current = await self.inner.get_head(entry.pk)
        if current is not None and entry.pk not in self._old_heads:
            self._old_heads[entry.pk] = current
        await self.inner.set_head(entry)
