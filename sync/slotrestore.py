"""A members slot the store lost, written again; one a mirror's store holds an older revision of, carried to it.

A device that wrote a session's members slot (members.py) writes it again when the store lost it, or, of a
mirror, any of the stores that should hold everything written so far (a read through the mirror finds the slot
in whichever store has it, so that one store's loss never shows in what is read). A store of a mirror holding an
older revision, whole, than another holds has not lost it: another device most likely wrote the later revisions
to the stores it uses, only some of this mirror's (a device on the relay alone, this one on a folder store and
the relay). The very entry the other store holds is put there, with its object: no new revision. Two stores
holding different slots of the same revision (written apart by two such devices) are merged: a new revision
listing the writers of both, written to every store.

One restore of a session runs at a time (Members.restore, bounded.KeyedRuns): the follower's pull, `sessiond
repair` and the republisher each ask for one, and two that both found the slot lost wrote it twice, two new
revisions, the second racing the first. One asked while another runs waits for it and takes its result (True:
written, as the follower expects of a slot it found lost). Lock order, per session: the rekey lock
(generation.py; the follower's pull holds it around its restore) before the restore's run, never after: nothing
within a restore takes the rekey lock (nor the push lock, ctx.lock), so a restore waited for under the rekey lock
ends without it, and a rekey waiting for that lock waits only for that restore.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from ..storage.redact import shown_url
from ..stores import StaleHead, Store, StoreError
from ..stores.bounded import bounded
from ..stores.registry import RegistryEntry, RegistryError
from .context import SyncContext
from .errors import ImportError_
from .membersentry import LOST, announce_key
from .membersobject import MEMBERS_MAX_BYTES
from .mirror import MirrorStore

log = logging.getLogger("sessiond.sync")

READS = 2  # readings of the stores a restore makes at most: again after a carry refused (restore)


class _Read(Protocol):
    @property
    def revision(self) -> int: ...


class Slots(Protocol):
    """What restore uses of members.Members."""

    ctx: SyncContext

    async def read_slot(
        self, store: Store, sid: str, session_key: bytes, announce_pk: bytes, min_rev: int = 0, *, entry: RegistryEntry
    ) -> tuple[int, list[dict], dict | None, list[dict]]: ...

    async def read_apart(self, store: Store, sid: str, session_key: bytes, announce_pk: bytes) -> _Read: ...

    async def ensure_member(
        self, sid: str, *, extra: Sequence[dict] = (), frozen: Sequence[dict] = (), rewrite: int | None = None
    ) -> int: ...


async def restore(members: Slots, sid: str) -> bool:
    """Write `sid`'s members slot again if this device wrote it (announced itself in it, holds the write secret) and
    the store lost it: its entry, the object the entry names (or holds it damaged: its bytes, or what they decrypt
    to, not a members object of this session), or revisions of it (an older one than this device has seen, and, of a
    mirror, no other store holding it as far). Without it, a code used afterwards imports nothing, and the devices
    that follow the session fail their pulls. Returns whether it wrote the slot. A store that does not answer is not
    one that lost it: left to the push and pull that report it.

    A store of a mirror holding an older revision, whole, while another holds the slot as far as this device has
    seen: carried to (`_carry`). Written again instead, the slot would cost a new revision each time the device
    that wrote it elsewhere writes it, racing that device's own writes; carrying mends a store that rolled back
    this device's own write as well.

    Stores of a mirror holding different slots of one revision, the highest, each whole (two devices, each on
    some of the mirror's stores, wrote it apart): a slot listing the writers (and the frozen logs) of them all
    written at the next revision, to every store (True). Left as they were, a read through the mirror takes one,
    and the writers only the other lists are followed by no device reading through the mirror, nor learn of
    the writers on the other store; carried, the entry would be refused (a store keeps the revision it holds).
    Not when one holds a rekey's notice (the rekey's own slot says whom it keeps).

    A carry refused (the store behind was written meanwhile: a device on it alone wrote the same revision) reads
    the stores again, once: slots of one revision apart are merged then, not left until the slot's next revision
    (the follower restores only on one)."""
    for _ in range(READS):
        wrote = await _restore_once(members, sid)
        if wrote is not None:
            return wrote
    return False


def served_stale(sid: str, url: str, rev: int, seen: int, *, own: bool) -> ImportError_:
    """Why a rekey is refused (nothing written yet) over a members slot the store serves at revision `rev`, older
    than `seen` this device read, after a restore wrote it again (sync/rekey.py): a store that lies, a cache in front
    of it, or its host restoring a backup again. Gone on over it, the writers let in since would get no key. `own`:
    the store is this daemon's (which a move of the home's store leaves), not one the session was imported through."""
    away = (
        "move this device to a store you trust (`sessiond stop && sessiond start --store URL --change-store`)"
        if own
        else "import a new share code of it through a store you trust (`sessiond import < code.txt`), made by a device"
        " that writes it"
    )
    return ImportError_(
        "replayed",
        f"session {sid} was not rekeyed: the store {shown_url(url)} serves its members slot at revision {rev}, older"
        f" than revision {seen} this device read, even after this device wrote it again (the store lies, a cache in"
        f" front of it serves an old copy, or its host restored a backup again); a rekey over it would give no key to"
        f" the writers let in since. Nothing was rekeyed. Check the store (`sessiond verify {sid}`); if it stays so,"
        f" {away}",
    )


async def _restore_once(members: Slots, sid: str) -> bool | None:
    """restore, one reading of the stores: None if a carry was refused (the store written meanwhile)."""
    ctx = members.ctx
    remote = await ctx.db.remote(sid)
    write_secret = ctx.keys.write_secret(sid)
    session_key = ctx.keys.session_key(sid)
    if remote is None or not remote["announced"] or write_secret is None or session_key is None:
        return False
    ak = announce_key(write_secret)
    announce_pk = bytes(ak.verify_key)
    if announce_pk != bytes(remote["announce_pk"]):  # (a rekey under way: it writes the slot)
        return False
    pk = b"\xed" + announce_pk
    store = await ctx.store_for(sid)
    seen = remote["members_rev"]
    lost, highest, holds = False, seen, False
    behind: list[Store] = []  # (stores of a mirror holding an older revision, whole)
    newest: RegistryEntry | None = None  # (the newest entry a store holds whole: the one carried to those behind)
    whole: dict[bytes, tuple[int, list[dict], dict | None, list[dict]]] = {}  # each slot held whole, by its data
    mirrored = isinstance(store, MirrorStore)
    for st in store.caught_up() if isinstance(store, MirrorStore) else [store]:
        try:
            entry = await bounded(st.get_head(pk), ctx.timeout)
            if entry is None or (entry.revision < seen and not mirrored):  # (one store: rolled back)
                lost = True
                continue
            highest = max(highest, entry.revision)
            if entry.revision < seen:
                # its object read and opened too, nothing of it kept as the session's slot: not the revision followed
                rev = (await members.read_apart(st, sid, session_key, announce_pk)).revision
                highest = max(highest, rev)
                if rev < seen:  # (lost unless another store holds it whole: below)
                    behind.append(st)
                else:  # (written meanwhile)
                    holds = True
                continue
            # the object read and opened, not only looked for: one damaged (its bytes, or what they decrypt to) is
            # lost as surely as one deleted
            whole[bytes(entry.data)] = await members.read_slot(st, sid, session_key, announce_pk, entry=entry)
            holds = True
            if newest is None or (entry.revision, entry.data) > (newest.revision, newest.data):
                newest = entry  # (of two of one revision, the one a read through the mirror takes)
        except ImportError_ as exc:
            lost |= exc.kind in LOST
        except RegistryError:  # its entry not validly signed: lost as surely as one deleted
            lost = True
        except (TimeoutError, StoreError, OSError):
            continue
    lost |= bool(behind) and not holds  # (behind what this device has seen, and no store of the mirror holds it)
    if not lost and newest is not None and (apart := _apart(whole, newest.revision)):
        log.warning(
            "two stores of the mirror hold different members slots of revision %d (devices each on some of its"
            " stores wrote it apart): writing one listing the writers of both",
            newest.revision,
            extra={"session": sid},
        )
        await members.ensure_member(
            sid,
            extra=[m for slot in apart for m in slot[1]],
            frozen=[f for slot in apart for f in slot[3]],  # (one per log: ensure_member merges them)
            rewrite=newest.revision,
        )
        return True
    if not lost:
        if behind and newest is not None and not await _carry(ctx, store, sid, replace(newest, signing_key=ak), behind):
            return None
        return False
    log.warning("the store lost the session's members slot: writing it again", extra={"session": sid})
    await members.ensure_member(sid, rewrite=highest)
    return True


def _apart(
    whole: dict[bytes, tuple[int, list[dict], dict | None, list[dict]]], top: int
) -> list[tuple[int, list[dict], dict | None, list[dict]]]:
    """The slots of revision `top` (the highest) that the stores of a mirror hold whole, if they are not all one
    (two devices, each on some of its stores, wrote that revision apart: a read through the mirror takes one,
    the same on every device, and the writers the other lists alone are followed by no device on both), and none
    holds a rekey's notice (the rekey's own slot lists whom it keeps); else none."""
    apart = [slot for slot in whole.values() if slot[0] == top]
    return apart if len(apart) > 1 and all(slot[2] is None for slot in apart) else []


async def _carry(ctx: SyncContext, mirror: Store, sid: str, entry: RegistryEntry, behind: Sequence[Store]) -> bool:
    """The slot's `entry` (as another store of `mirror` holds it, whole) and its object put to each store of
    `behind`, which holds an older revision. The same entry, not a new revision: no race with its writer, whose
    later write replaces it. Without it a device that uses only the store behind would write its own slot at a
    revision the others hold (two slots of one revision: a device reading one follows only the writers it lists),
    and the object that store's slot names, let go once this device read the newer one (SyncContext.named), would
    go at the next gc. A store that fails is left to the next check; False if one refused (StaleHead: written
    meanwhile), which the caller reads again."""
    ct = await bounded(mirror.get_capped(bytes(entry.data[1:33]), MEMBERS_MAX_BYTES, "a members object"), ctx.timeout)
    refused = False
    for st in behind:
        try:
            await bounded(st.put(ct), ctx.timeout)
            await bounded(st.set_head(entry), ctx.timeout)
        except StaleHead:
            refused = True
            continue
        except (TimeoutError, StoreError, OSError) as exc:
            log.info("could not carry the members slot to %s: %s", shown_url(st.url), exc, extra={"session": sid})
            continue
        await ctx.named(st, entry, written=False)
        log.info(
            "the members slot carried to a store of the mirror that held an older revision (another device wrote"
            " the newer to the stores it uses, or the store lost it)",
            extra={"session": sid, "store": st.url},
        )
    return not refused
