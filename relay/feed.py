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


class Feed:
    def __init__(self) -> None:
        self.epoch = secrets.token_hex(8)
        self.cursor = 0
        self._heads: dict[bytes, tuple[int, int]] = {}  # pk -> (sequence of its last change, revision)
        self._changed = asyncio.Condition()
        self._closing = False

    def load(self, pk: bytes, revision: int) -> None:
        """A head found on disk at start."""
        self.cursor += 1
        self._heads[pk] = (self.cursor, revision)

    async def changed(self, pk: bytes, revision: int) -> None:
        async with self._changed:
            self.cursor += 1
            self._heads[pk] = (self.cursor, revision)
            self._changed.notify_all()

    def since(self, cursor: int, epoch: str | None) -> tuple[bool, list[tuple[bytes, int]]]:
        reset = epoch != self.epoch or cursor > self.cursor
        after = 0 if reset else cursor
        items = sorted((seq, pk, rev) for pk, (seq, rev) in self._heads.items() if seq > after)
        return reset, [(pk, rev) for _, pk, rev in items]

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
