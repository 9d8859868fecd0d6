"""Objects kept by the relay: `DATA/objects/<2 hex>/<64 hex>`, named by the BLAKE3 hash the relay
computes from the uploaded bytes, written atomically, served verbatim. Each account that uploads an
object pins it (`DATA/pins/<account>/<64 hex>`, holding the object's size), and its pins count against
its quota. A delete removes only the caller's own pin; the object goes when no pin is left. So no
account can delete what another still keeps.

Heads count too: each head an account creates (a key the relay holds no head for yet) charges it
HEAD_SIZE bytes, for good (`DATA/headpins/<account>/<pk hex>`, holding that size; the relay deletes no
head). Moving a head the relay already holds costs nothing, so a device whose account is full still
moves the heads it has, and only its new sessions wait for room."""

from __future__ import annotations

import asyncio
import os

from ..storage.fsutil import atomic_write, ensure_durable_dir, fsync_dir
from ..stores.base import MAX_OBJECT_SIZE
from ..stores.cid import digest

# What a head counts against its creator's quota: its entry (at most 155 bytes on disk: type, key,
# revision, length, 48 data bytes, signature) rounded up for its file.
HEAD_SIZE = 256


class QuotaExceeded(Exception):
    pass


class TooLarge(Exception):
    pass


class Objects:
    def __init__(self, data_dir: str, quota: int):
        self.quota = quota
        self.objects = os.path.join(data_dir, "objects")
        self.pins = os.path.join(data_dir, "pins")
        self.head_pins = os.path.join(data_dir, "headpins")
        for d in (self.objects, self.pins, self.head_pins):
            ensure_durable_dir(d)
        self._lock = asyncio.Lock()  # object files and pins change under it: an upload and a delete never cross
        self.used: dict[str, int] = {}
        for root in (self.pins, self.head_pins):
            for account, total in usage(root).items():
                self.used[account] = self.used.get(account, 0) + total

    def _full(self, account: str, used: int, what: str) -> QuotaExceeded:
        return QuotaExceeded(
            f"this account's storage quota is used up: {used} of {self.quota} bytes used, and {what}; "
            "ask the relay's owner for a larger quota (sessiond serve --quota)"
        )

    def path(self, h: bytes) -> str:
        hx = h.hex()
        return os.path.join(self.objects, hx[:2], hx)

    def _pin_path(self, account: str, h: bytes) -> str:
        return os.path.join(self.pins, account, h.hex())

    def read(self, h: bytes) -> bytes | None:
        try:
            with open(self.path(h), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _write(self, account: str, h: bytes, data: bytes) -> None:
        path = self.path(h)
        if not os.path.exists(path):
            ensure_durable_dir(os.path.dirname(path))  # (a new folder's entry too: the put is acknowledged)
            atomic_write(path, data, 0o600)
        ensure_durable_dir(os.path.join(self.pins, account))
        atomic_write(self._pin_path(account, h), str(len(data)).encode(), 0o600)

    async def put(self, account: str, data: bytes) -> bytes:
        if len(data) > MAX_OBJECT_SIZE:
            raise TooLarge(f"object of {len(data)} bytes exceeds the relay's limit of {MAX_OBJECT_SIZE} bytes")
        h = await asyncio.to_thread(digest, data)
        async with self._lock:
            pinned = os.path.exists(self._pin_path(account, h))  # counted already, with its size
            if pinned and os.path.exists(self.path(h)):
                return h  # already this account's: no new storage used
            used = self.used.get(account, 0)
            if not pinned and used + len(data) > self.quota:
                raise self._full(account, used, f"the object needs {len(data)} more")
            await asyncio.to_thread(self._write, account, h, data)
            if not pinned:
                self.used[account] = used + len(data)
        return h

    def _unpin(self, account: str, h: bytes) -> int | None:
        pin = self._pin_path(account, h)
        try:
            with open(pin, "rb") as f:
                size = int(f.read() or b"0")
        except FileNotFoundError:
            return None
        os.unlink(pin)
        fsync_dir(os.path.dirname(pin))
        hx = h.hex()
        still_pinned = any(os.path.exists(os.path.join(self.pins, other, hx)) for other in os.listdir(self.pins))
        if not still_pinned:
            try:
                os.unlink(self.path(h))
                fsync_dir(os.path.dirname(self.path(h)))
            except FileNotFoundError:
                pass
        return size

    async def delete(self, account: str, h: bytes) -> bool:
        """Remove `account`'s pin on `h`; False if it has none (whoever else pins the object)."""
        async with self._lock:
            size = await asyncio.to_thread(self._unpin, account, h)
            if size is None:
                return False
            self.used[account] = max(0, self.used.get(account, 0) - size)
            return True

    # -- heads ----------------------------------------------------------------------------------

    def _head_pin(self, account: str, pk: bytes) -> str:
        return os.path.join(self.head_pins, account, pk.hex())

    def _write_head_pin(self, account: str, pk: bytes) -> None:
        ensure_durable_dir(os.path.join(self.head_pins, account))
        atomic_write(self._head_pin(account, pk), str(HEAD_SIZE).encode(), 0o600)

    async def charge_head(self, account: str, pk: bytes) -> None:
        """`account` creates the head of `pk`: HEAD_SIZE bytes of its quota; QuotaExceeded if it has no
        room for them (the caller holds the registry's lock, so no other write of `pk` crosses this)."""
        async with self._lock:
            if os.path.exists(self._head_pin(account, pk)):
                return  # paid for already (its head was damaged on disk, and is written again)
            used = self.used.get(account, 0)
            if used + HEAD_SIZE > self.quota:
                raise self._full(
                    account, used, f"a new head needs {HEAD_SIZE} more (the heads it already has still move)"
                )
            await asyncio.to_thread(self._write_head_pin, account, pk)
            self.used[account] = used + HEAD_SIZE

    async def refund_head(self, account: str, pk: bytes) -> None:
        """Undo charge_head: the head it paid for was not written after all."""
        async with self._lock:
            try:
                await asyncio.to_thread(os.unlink, self._head_pin(account, pk))
            except FileNotFoundError:
                return
            self.used[account] = max(0, self.used.get(account, 0) - HEAD_SIZE)


def usage(root: str) -> dict[str, int]:
    """The bytes each account holds under `root` (DATA/pins or DATA/headpins): the sizes its pin files
    hold, summed."""
    out: dict[str, int] = {}
    for account in os.listdir(root):
        folder = os.path.join(root, account)
        if not os.path.isdir(folder):
            continue
        total = 0
        for name in os.listdir(folder):
            if name.startswith("."):
                continue
            try:
                with open(os.path.join(folder, name), "rb") as f:
                    total += int(f.read() or b"0")
            except (OSError, ValueError):
                continue
        out[account] = total
    return out
