"""Whether each store of a mirror holds what a read through the mirror found (`verify`, sync/verify.py).

A read through a mirror takes an object from whichever store has it and a head as the highest among
them (sync/mirror.py), so a store that lost data never shows in what is read. `noting()` records, for
the reads made within it (in this task and those it starts, not in other tasks reading meanwhile), every
object and head the mirror gave; `lacking()` then asks each store that should hold everything written
so far which of them it lacks, or holds an older revision of."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ..stores import Store
from ..stores.bounded import bounded
from ..stores.registry import RegistryEntry
from .mirrordrain import FAILURES
from .mirrorhealth import Health


class Mirrored(Protocol):
    """What `lacking` reads of a mirror (sync/mirror.py's MirrorStore)."""

    stores: list[Store]
    health: dict[str, Health]

    def caught_up(self) -> list[Store]: ...


@dataclass
class Reads:
    objects: set[bytes] = field(default_factory=set)
    heads: dict[bytes, int] = field(default_factory=dict)  # head key -> the revision read

    def __bool__(self) -> bool:
        return bool(self.objects or self.heads)


_noted: contextvars.ContextVar[Reads | None] = contextvars.ContextVar("sessiond_mirror_reads", default=None)


@contextlib.contextmanager
def noting() -> Iterator[Reads]:
    """What the mirror reads within the block gives (see the module's docstring)."""
    reads = Reads()
    token = _noted.set(reads)
    try:
        yield reads
    finally:
        _noted.reset(token)


def note_object(h: bytes) -> None:
    reads = _noted.get()
    if reads is not None:
        reads.objects.add(h)


def note_head(entry: RegistryEntry | None) -> None:
    reads = _noted.get()
    if reads is not None and entry is not None:
        reads.heads[entry.pk] = max(entry.revision, reads.heads.get(entry.pk, 0))


async def lacking(mirror: Mirrored, reads: Reads, timeout: float) -> list[dict]:
    """Per store of `mirror` written to (not a read-only gateway): {"url", "ok"} and, for a store that
    lacks any of `reads`, "heads" (the keys, hex, of the heads it lacks or holds an older revision of)
    and "objects" (hashes, hex), and "none": whether it holds nothing of `reads` (no head of any of their keys,
    at any revision, nor any of their objects). A store that cannot be asked now ({"url", "ok": None, "not_checked":
    why}): one down, or with writes still waiting in its outbox or under way (it lacks them until they are
    sent, which is no loss)."""
    out: list[dict] = []
    caught_up = mirror.caught_up()
    for st in mirror.stores:
        h = mirror.health[st.url]
        if st.read_only or h.read_only:
            continue
        row: dict = {"url": st.url, "ok": None}
        out.append(row)
        if st not in caught_up:
            row["not_checked"] = (
                f"{h.pending} writes wait in its outbox"
                if h.pending
                else f"not answering ({h.last_error})"
                if h.reachable is False
                else "a write to it is under way"
            )
            continue
        try:
            heads, absent = [], 0
            for pk, rev in sorted(reads.heads.items()):
                entry = await bounded(st.get_head(pk), timeout)
                if entry is None or entry.revision < rev:
                    heads.append(pk.hex())
                absent += entry is None
            objects = []
            wanted = sorted(reads.objects)
            if wanted and await st.first_missing(wanted, timeout=timeout) is not None:
                for o in wanted:  # (only when one is missing: name them all)
                    if not await bounded(st.has(o), timeout):
                        objects.append(o.hex())
        except FAILURES as exc:
            row["not_checked"] = f"not answering ({exc})"
            continue
        row["ok"] = not heads and not objects
        if not row["ok"]:
            row["heads"], row["objects"] = heads, objects
            row["none"] = absent == len(reads.heads) and len(objects) == len(reads.objects)
    return out
