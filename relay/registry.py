"""Heads kept by the relay: S5 registry entries in `DATA/heads/<pk hex>` (the entry's wire bytes,
written atomically). An entry is kept only if its signature verifies and its revision is higher than
the one held; the check and the write happen under one lock, so two writers cannot both win. The
account that creates a head pays for it from its quota (objects.py: HEAD_SIZE); moving one is free."""

from __future__ import annotations

import asyncio
import os

from ..storage.fsutil import atomic_write, ensure_durable_dir
from ..stores.registry import KEY_TYPE_ED25519, RegistryEntry, RegistryError
from .feed import Feed
from .objects import Objects


class Refused(Exception):
    """A head the relay does not keep; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Registry:
    def __init__(self, data_dir: str, feed: Feed, objects: Objects | None = None):
        self.folder = os.path.join(data_dir, "heads")
        ensure_durable_dir(self.folder)
        self.feed = feed
        self.objects = objects  # charges a new head to the account that sets it; None: heads are free
        self._lock = asyncio.Lock()
        for name in sorted(os.listdir(self.folder)):
            try:
                pk = bytes.fromhex(name)
            except ValueError:
                continue  # a temporary file of an interrupted write, or a stranger
            entry = self._read(pk)
            if entry is not None:
                feed.load(entry.pk, entry.revision)

    def _path(self, pk: bytes) -> str:
        return os.path.join(self.folder, pk.hex())

    def _read(self, pk: bytes) -> RegistryEntry | None:
        try:
            with open(self._path(pk), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        try:
            entry = RegistryEntry.from_bytes(raw)
        except RegistryError:
            return None  # damaged on disk: as if absent, and a valid entry may replace it
        return entry if entry.pk == pk else None

    async def get(self, pk: bytes) -> RegistryEntry | None:
        return await asyncio.to_thread(self._read, pk)

    async def set(self, entry: RegistryEntry, account: str | None = None) -> bool:
        """Keep `entry`, set by `account`; False if it is the very entry already held. Refused otherwise;
        QuotaExceeded for a new head its account has no room for."""
        if len(entry.pk) != 33 or entry.pk[0] != KEY_TYPE_ED25519:
            raise Refused(400, "pk must be 33 bytes: 0xed followed by an Ed25519 public key")
        try:
            entry.verify()
        except RegistryError as exc:
            raise Refused(400, str(exc)) from None
        async with self._lock:
            current = await self.get(entry.pk)
            if current is not None and entry.revision <= current.revision:
                if current == entry:
                    return False
                raise Refused(
                    409,
                    f"revision {entry.revision} is not newer than the revision held "
                    f"({current.revision}); a head only moves forward",
                )
            charged = current is None and account is not None and self.objects is not None
            if charged:
                assert self.objects is not None and account is not None
                await self.objects.charge_head(account, entry.pk)
            try:
                await asyncio.to_thread(atomic_write, self._path(entry.pk), entry.to_bytes(), 0o600)
            except BaseException:
                if charged:
                    assert self.objects is not None and account is not None
                    await self.objects.refund_head(account, entry.pk)
                raise
            await self.feed.changed(entry.pk, entry.revision)
        return True
