"""What a store's change feed named lately, for `Store.head_changes` tokens (stores/headjournal.py, the folder
store's journal; stores/s5feed.py, the relay's feed): each poll's or answer's heads under its position, the
newest kept, so a follower asking with the token of its last look gets the heads named since then.

Kept: at most MAX_NAMED heads named in all (the newest batch always, whatever its size) and MAX_BATCHES
batches. A follower looks with the token of its previous look, one batch back, or a few when the relay's
feed answered several times between two looks; an older token (a follower that was away) is told "cannot
say", and looks at every head once. Bounded by what is named, not by looks alone: under load each look
names tens of heads, and 4,096 looks' worth (the bound by batches alone) held ~15 MB of a daemon that
follows 10,000 heads (bench/results/profile-memory.md, the twenty-first pass).
"""

from __future__ import annotations

import collections
from collections.abc import Collection

MAX_NAMED = 10_000  # heads named, in all the kept batches (~1 MB)
MAX_BATCHES = 4096  # batches kept at most


class ChangeWindow:
    """The newest batches of heads named, by position (a poll's sequence number, a feed's cursor)."""

    def __init__(self, max_named: int | None = None, max_batches: int | None = None):
        self.max_named = MAX_NAMED if max_named is None else max_named
        self.max_batches = MAX_BATCHES if max_batches is None else max_batches
        self.known_from = 0  # a position before this: what changed since is not all kept
        self.named = 0  # heads named in the kept batches
        self._batches: collections.deque[tuple[int, Collection[bytes]]] = collections.deque()

    def add(self, position: int, pks: Collection[bytes]) -> None:
        """The heads named at `position` (after every position added before); the oldest batches dropped
        past the bounds."""
        if not pks:
            return
        self._batches.append((position, pks))
        self.named += len(pks)
        while len(self._batches) > 1 and (self.named > self.max_named or len(self._batches) > self.max_batches):
            old, dropped = self._batches.popleft()
            self.named -= len(dropped)
            self.known_from = old

    def reset(self, position: int) -> None:
        """Nothing kept; known from `position` on (a feed that started again)."""
        self._batches.clear()
        self.named = 0
        self.known_from = position

    def since(self, position: int) -> set[bytes] | None:
        """The heads named after `position`; None when that is older than what is kept."""
        if position < self.known_from:
            return None
        out: set[bytes] = set()
        for at, pks in reversed(self._batches):
            if at <= position:
                break
            out.update(pks)
        return out
