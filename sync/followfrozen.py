"""The frozen logs of a members slot, as a pull takes them in (sync/follower.py composes it).

A rekey that drops writers pins each one's log as it froze it in the members slot ("frozen logs", FORMATS.md
§6). A pull applies what of them this device has not applied yet, puts back one whose manifest the store lost
(frozenrepair.py), and writes the slot back when it lacks this device or frozen logs this device noted.
"""

from __future__ import annotations

import functools
import logging

from ..storage.testhooks import pause_for_tests
from ..stores import Store, StoreError
from .bounded import LRU
from .context import SyncContext
from .errors import ImportError_, describe
from .fetch import fetch_frozen
from .frozen import decode_frozen, frozen_adds
from .frozenrepair import lacking, put_back
from .generation import Generations
from .members import MEMBERS_KEPT, Members

log = logging.getLogger("sessiond.sync")


class FrozenLogs:
    """What pulls do with the slot's frozen logs; remembers which this process took in."""

    def __init__(self, ctx: SyncContext, members: Members, generations: Generations):
        self.ctx = ctx
        self.members = members
        self.generations = generations  # the follower's: the rekey lock as pulls take it (generation.py)
        # frozen logs (a rekey's dropped writers, pinned in the members slot) taken in by this process:
        # (session, head key, revision); each is read once, for what of it was not applied here yet
        self._taken: LRU[tuple[str, bytes, int], bool] = LRU(MEMBERS_KEPT)

    async def write_back(self, sid: str, remote: dict, members: list[dict], frozen: list[dict]) -> None:
        """The slot just read lacks this device, which announced itself in it, or frozen logs it noted
        (Members.keep_frozen), or holds an older freeze of one: a device that wrote the slot (announced in it,
        with the write secret) writes them back (ensure_member merges). This device unlisted: two devices wrote
        one revision of the slot to the stores of a mirror apart (one of its stores down for one of them, which
        its outbox sent later, refused as stale), and a device reading the other store's never follows this
        one. Frozen logs lacking: a sessiond from before them (2026-12-02) rewrote the slot with itself added,
        keeping only what it knew of the object (its members and rekey notice), or a kept writer took a rekey's
        notice and wrote the new slot first; a device importing the session now would not get what the dropped
        writers wrote before the rekey. Its failure is not the pull's: the next pull tries again.
        The frozen logs noted are `remote`'s, the session's row as the pull read it at its start, not read again:
        what the pull's read of the slot noted since (Members.keep_frozen) is the slot's own, which it holds."""
        if not remote["announced"] or self.ctx.keys.write_secret(sid) is None:
            return
        me = self.ctx.keys.head_pk(sid)
        if all(m["head_pk"] != me for m in members):
            log.warning(
                "the members slot no longer lists this device, which announced itself in it: writing it back",
                extra={"session": sid},
            )
        elif not frozen_adds(frozen, decode_frozen(remote.get("frozen"))):
            return
        else:
            log.warning(
                "the members slot lacks frozen logs this device noted, or holds older freezes of them (an older"
                " sessiond wrote it, or a kept writer wrote the new slot first): writing them back",
                extra={"session": sid},
            )
        await pause_for_tests("pull.write_back")  # (the tests hold it here: the slot read, not written back)
        try:
            async with self.generations.same(sid, bytes(remote["announce_pk"])) as same:
                if same:  # (else a rekey switched meanwhile: the slot read is no longer this device's)
                    await self.members.ensure_member(sid)
        except (ImportError_, StoreError, TimeoutError, OSError) as exc:
            log.warning("could not write the members slot back: %s", describe(exc), extra={"session": sid})

    async def take(self, sid: str, store: Store, frozen: list[dict], announce_pk: bytes, *, audit: bool) -> int:
        """What this device has not applied of the dropped writers' logs as the rekey froze them (the
        writes they made between this device's last pull of them and the rekey): so it holds what a device
        importing the session now holds. Each frozen log once a process, its manifest read, then only the
        pages past what is here. One whose manifest the store lost is put back by a writer that holds it
        (frozenrepair.py): found so when it is read, or, taken already, by a writer's audit (`audit`: its
        full pull that reads the slot's object again, or one `sessiond sync --wait` asked for: asked), which
        asks the store for each one's manifest."""
        ctx, new = self.ctx, 0
        for f in frozen:
            mark = (sid, bytes(f["k"]), int(f["r"]))
            if mark in self._taken:
                if audit and ctx.keys.write_secret(sid) is not None and await lacking(store, [f], ctx.timeout):
                    await self._put_back(sid, store, f, announce_pk)
                continue
            have, check = await ctx.db.last_seq(sid, str(f["d"])), ctx.check_remote
            read = functools.partial(fetch_frozen, store, sid, timeout=ctx.timeout, check=check, after_seq=have)
            try:
                lg, last = await read(f)
            except ImportError_ as exc:
                if exc.kind != "frozen_lost" or (again := await self._put_back(sid, store, f, announce_pk)) is None:
                    raise
                lg, last = await read(again)
            if len(lg):
                new += await ctx.db.apply_remote(sid, {lg.device_id: lg})
            if await ctx.db.last_seq(sid, str(f["d"])) >= last:  # held whole here: one this device may put back
                await ctx.db.syncstate.note_frozen_taken(sid, bytes(f["k"]), int(f["r"]), last)
            self._taken[mark] = True
        return new

    async def _put_back(self, sid: str, store: Store, frozen: dict, announce_pk: bytes) -> dict | None:
        """frozenrepair.put_back of `frozen`, its manifest lost, on the generation the pull read (generation.py):
        its new entry, or None if this device could not put it back (its failure said in the log: the pull's
        own error says what is lost)."""
        try:
            async with self.generations.same(sid, announce_pk) as same:
                if not same:
                    return None
                return (await put_back(self.ctx, self.members, sid, store, [frozen])).get(bytes(frozen["h"]))
        except (ImportError_, StoreError, TimeoutError, OSError) as exc:
            log.warning("could not put a lost frozen log back: %s", describe(exc), extra={"session": sid})
            return None
