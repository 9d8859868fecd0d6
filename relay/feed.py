"""The change feed on heads: every accepted head gets the next sequence number; a follower asks for
the heads changed after its cursor and, if none did, waits (long-poll) until one does or the wait
ends. So a follower learns of a new head as soon as it is set, with one open request, however many
heads it follows.

Sequence numbers live in memory: at start the heads already on disk are numbered 1..n, and the feed
gets a new random `epoch`. A follower presenting another epoch (the relay restarted) gets every head
again (`reset`), so nothing set while it was away is missed.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict


class Feed:
    def __init__(self) -> None:
        self.epoch = secrets.token_hex(8)
        self.cursor = 0
        # pk -> (sequence of its last change, revision), in the order of those sequences (a change moves
        # its head to the end): the heads changed after a cursor are a walk back from the end, so a
        # follower's answer costs what changed, not every head the relay holds
        self._heads: OrderedDict[bytes, tuple[int, int]] = OrderedDict()
        self._changed = asyncio.Condition()
        self._closing = False

    def load(self, pk: bytes, revision: int) -> None:
        """A head found on disk at start."""
        self.cursor += 1
        self._heads[pk] = (self.cursor, revision)
        self._heads.move_to_end(pk)

    async def changed(self, pk: bytes, revision: int) -> None:
        async with self._changed:
            self.cursor += 1
            self._heads[pk] = (self.cursor, revision)
            self._heads.move_to_end(pk)
            self._changed.notify_all()

    def since(self, cursor: int, epoch: str | None) -> tuple[bool, list[tuple[bytes, int]]]:
        reset = epoch != self.epoch or cursor > self.cursor
        if reset:
            return reset, [(pk, rev) for pk, (_, rev) in self._heads.items()]
        items = []
        for pk in reversed(self._heads):
            seq, rev = self._heads[pk]
            if seq <= cursor:
                break
            items.append((pk, rev))
        items.reverse()
        return reset, items

    async def wait(self, cursor: int, epoch: str | None, timeout: float) -> tuple[bool, list[tuple[bytes, int]]]:
        """The changes after `cursor`, waiting up to `timeout` seconds for one if there are none yet."""
        reset, changes = self.since(cursor, epoch)
        if changes or reset or timeout <= 0:
            return reset, changes
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.cursor > cursor or self._closing), timeout)
            except TimeoutError:
                pass
        return self.since(cursor, epoch)

    async def close(self) -> None:
        """Answer every waiting follower now (the relay is stopping)."""
        async with self._changed:
            self._closing = True
            self._changed.notify_all()
