"""A members slot the stores of a mirror hold apart, seen by a read through the mirror: one restore check of it.

A follower runs Members.restore (sync/slotrestore.py: carry a revision to a store behind, merge two slots of one
revision written apart) when its pull reads a new revision of the slot. A store of the mirror that was not caught
up then (down, or with writes waiting in its outbox) can come back holding another copy of that revision, or an
older one: the pulls see no new revision, and the copies stay apart until the slot's next revision, while a device
on that store alone follows only the writers its copy lists. A read of a head through the mirror asks every store
that answers anyway (MirrorStore.get_head): what it saw of the stores disagreeing is noted here (`watching`, in the
task that reads, as mirrorcheck.noting does), at no read of its own, and the follower checks the session once
(`Apart.check`): at once if the stores that disagree are all caught up, else when one of the mirror's stores
catches up next (`Apart.back`, at the follower's poll: a look at the few sessions waiting, none per shared session).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..stores import Store
from ..stores.registry import RegistryEntry
from .bounded import LRU
from .mirrorcheck import Mirrored

CHECKED_KEPT = 1024  # (session, what the stores held) already checked: not checked again while the stores hold it


@dataclass(frozen=True)
class Seen:
    """What the stores of a mirror held of one head, where they disagree: each (revision, data) held, and whether
    every store holding one was caught up (else a check now would leave out the store behind: restore reads only
    the stores caught up)."""

    held: frozenset[tuple[int, bytes]]
    settled: bool
    stores: frozenset[str] = frozenset()  # the URLs of the stores that hold one


_noted: contextvars.ContextVar[dict[bytes, Seen] | None] = contextvars.ContextVar("sessiond_mirror_apart", default=None)
_holders: contextvars.ContextVar[dict[bytes, frozenset[str]] | None] = contextvars.ContextVar(
    "sessiond_mirror_holders", default=None
)


@contextlib.contextmanager
def watching() -> Iterator[dict[bytes, Seen]]:
    """The heads the reads through a mirror within the block found the stores disagreeing on, by key."""
    seen: dict[bytes, Seen] = {}
    token = _noted.set(seen)
    try:
        yield seen
    finally:
        _noted.reset(token)


@contextlib.contextmanager
def holding() -> Iterator[dict[bytes, frozenset[str]]]:
    """The stores written to (not gateways) that the reads of heads through a mirror within the block found holding
    each head as read (the entry the mirror answered), by key: a pull notes them as holding that device's log
    (storage/logsseen.py), so a store that later holds none of it lost it (sync/verify.py)."""
    holders: dict[bytes, frozenset[str]] = {}
    token = _holders.set(holders)
    try:
        yield holders
    finally:
        _holders.reset(token)


def note_apart(mirror: Mirrored, pk: bytes, asked: Sequence[Store], results: Sequence[object]) -> None:
    """What the stores of `mirror` asked for the head `pk` answered (`results`, in the order of `asked`): noted for
    the task watching, if the stores written to (not gateways) that hold an entry hold different ones; and for the
    task holding, the stores that hold the entry read (the highest)."""
    seen, holders = _noted.get(), _holders.get()
    if seen is None and holders is None:  # (nobody watching: nothing to work out)
        return
    held = {
        st: (r.revision, bytes(r.data))
        for st, r in zip(asked, results)
        if isinstance(r, RegistryEntry) and not (st.read_only or mirror.health[st.url].read_only)
    }
    if holders is not None and held:
        best = max(held.values())
        holders[pk] = frozenset(st.url for st, h in held.items() if h == best)
    if seen is not None and len(set(held.values())) > 1:
        caught = mirror.caught_up()
        seen[pk] = Seen(frozenset(held.values()), all(st in caught for st in held), frozenset(st.url for st in held))


def catch_ups(mirror: Mirrored) -> int:
    """How many times a store of `mirror` caught up (its outbox sent, or it answered again) since its start."""
    return sum(h.catch_ups for h in mirror.health.values())


class Apart:
    """The follower's record of the sessions whose slot the stores of a mirror were seen holding apart."""

    def __init__(self) -> None:
        self._checked: LRU[tuple[str, frozenset[tuple[int, bytes]]], bool] = LRU(CHECKED_KEPT)
        # session -> its mirror, its catch_ups then, and the stores seen holding the slot apart
        self._waiting: dict[str, tuple[Mirrored, int, frozenset[str]]] = {}

    def check(self, sid: str, mirror: Mirrored, seen: Seen | None) -> bool:
        """Whether to run a restore check of `sid` now, its pull having read the slot through `mirror` and seen
        `seen` (None: the stores agreed, or the slot was taken as last read, its head not read). Once per what the
        stores held (a disagreement a restore leaves, a rekey's notice on one store, costs no more reads); not
        settled, left for `back`."""
        if seen is None:
            return False
        if not seen.settled:
            self._waiting[sid] = (mirror, catch_ups(mirror), seen.stores)
            return False
        self._waiting.pop(sid, None)
        if (sid, seen.held) in self._checked:
            return False
        self._checked[(sid, seen.held)] = True
        return True

    def back(self) -> set[str]:
        """The sessions left waiting whose mirror had a store catch up since, or whose stores seen apart are all caught
        up now (one was behind only by a write under way, whose end counts no catch-up; or the catch-up came between
        the read and its note here): to pull in full (their slot read through the mirror again, and checked if the
        stores still disagree)."""
        out = {
            sid
            for sid, (mirror, then, stores) in self._waiting.items()
            if catch_ups(mirror) != then or stores <= {st.url for st in mirror.caught_up()}
        }
        for sid in out:
            del self._waiting[sid]
        return out
