"""Taking another device's rekey notice: the check before this device switches (rekeyproof's checks, given this
device's state: its keys, the peers' revisions, the logs it found behind), and, when the check finds a rekey that
left this device out, the session marked revoked (storage: `mark_revoked`, on the members slot the check read
only). While a device catches up through a chain of rekeys, the links of the chain one notice's check read are kept
for the next notice's (`links`): a device k rekeys behind reads the chain once, not once per notice. Composed by
rekey.Rekeyer, which switches once `confirm` holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from ..storage.testhooks import pause_for_tests
from ..stores import Store
from . import rekeywalk
from .bounded import LRU
from .context import SyncContext
from .errors import ImportError_
from .fetch import BEHIND
from .members import Members
from .rekeycarried import carried_past, left_here
from .rekeyproof import Links, check_exclusion, check_notice, kept_but_left_out, open_box

# sessions whose chain of rekeys, as the check of the notice taken last read it, kept for the next (NoticeCheck.links)
CHAINS_KEPT = 64


class NoticeCheck:
    """Checks another device's rekey notice before this device takes it (Rekeyer.take), or learns from it
    that its access ended."""

    def __init__(self, ctx: SyncContext, members: Members):
        self.ctx = ctx
        self.members = members
        # Per session, while it catches up through a chain of rekeys (a notice taken, and the slot it switched to
        # holding the next): the links of the chain its check read (rekeyproof.Links), for the next notice's
        # check. So a device k rekeys behind reads the chain once, not once per notice (k*k/2 slots)
        self.links: LRU[str, Links] = LRU(CHAINS_KEPT)

    async def confirm(self, sid: str, notice: dict, store: Store, members: list[dict]) -> dict | None:
        """The secret this device's box in a rekey notice holds ({"a", "k", "w"?}), once the notice is
        checked to be the rekey its author claims, with no other device contradicting it
        (rekeyproof.check_notice); None if this device has switched to it already. A notice with no box
        for this device raises `revoked` only once rekeyproof.check_exclusion holds, the session marked revoked
        first (a question to its model closed out from the check's start: storage/closing.py); so does one
        that boxes it, when check_notice finds a later rekey that left it out (marked revoked then). Raises
        ImportError_ (revoked, rekey_unconfirmed, rekey_conflict, or the store's failure). Changes nothing else.
        `members`: the list of the slot the notice is in (the generation it ends)."""
        ctx, keys = self.ctx, self.ctx.keys
        rekeywalk.checking(sid)  # (a walk cut short by an earlier check is under way only if this one goes on with it)
        my_pk = keys.head_pk(sid)
        remote = await ctx.db.remote(sid)
        if remote is None or bytes(remote["announce_pk"]) == notice.get("a"):
            return None  # already switched
        secret = open_box(notice, my_pk, keys.head_key(sid), sid)
        peers = await ctx.db.peers(sid)
        known_revs = {bytes(p["head_pk"]): p["rev"] for p in peers}
        behind = {bytes(p["head_pk"]): p["rev"] for p in peers if p["last_error"] == BEHIND}
        old_announce, held = bytes(remote["announce_pk"]), keys.session_keys(sid)
        if secret is None:  # left out: only once its author stands behind it (it may be a writer's forgery)
            # a question to its model meanwhile waits for the check (storage/closing.py), and is refused unasked;
            # one revoked already (a pull of it finds the notice every time) is refused without waiting
            revoked_already = (await ctx.db.get_session(sid))["access"] == "revoked"
            with contextlib.nullcontext() if revoked_already else ctx.db.closing.marked(sid, check=True):
                await pause_for_tests("rekey.left_out")  # (the tests hold the check here)
                author = await check_exclusion(
                    store, sid, notice, old_announce=old_announce, members=members, me=my_pk, keys=held,
                    known_revs=known_revs, timeout=ctx.timeout, behind=behind, walks=ctx.db.syncstate.claims_walks,
                )  # fmt: skip
                left = await self._revoked(sid, notice, my_pk, on=old_announce)  # (within the mark: no gap)
            if left is None:  # a new code imported meanwhile: on a generation that lists it, not left out
                return None
            raise ImportError_(
                "revoked",
                f"session {sid} was rekeyed without this device (by device {author}): " + kept_but_left_out(left),
            )
        links = self.links.pop(sid) or {}
        if held:
            links.pop((store.url, held[0], old_announce), None)  # (this notice's slot: read by the caller just now)
        await check_notice(
            store,
            sid,
            notice,
            old_announce=old_announce,
            members=members,
            me=my_pk,
            head_key=keys.head_key(sid),
            keys=held,
            new_key=bytes(secret["k"]),
            new_announce=bytes(secret["a"]),
            known_revs=known_revs,
            read_slot=self.members.read_members,
            timeout=ctx.timeout,
            behind=behind,
            left_here=lambda later: self._left_out_by(sid, later, my_pk, on=old_announce),  # (revoked)
            links=links,
            walks=ctx.db.syncstate.claims_walks,  # (a walk cut short goes on after a restart too: rekeywalk.py)
        )
        if (store.url, bytes(secret["k"]), bytes(secret["a"])) in links:  # the slot it switches to holds the next
            self.links[sid] = links
        # the keys switch to it: a walk cut short for any other notice is of a generation the session leaves
        rekeywalk.forget(sid)  # (its rows in the database go with the switch: rekeywalk.forget)
        return secret

    async def _left_out_by(self, sid: str, notice: dict, me: bytes, *, on: bytes) -> str:
        """_revoked for check_notice (a later rekey left this device out): what it says, '' if nothing was
        marked as a new code imported meanwhile moved the session on (the pull is refused; the next reads the
        new generation)."""
        return await self._revoked(sid, notice, me, on=on) or ""

    async def _revoked(self, sid: str, notice: dict, me: bytes, *, on: bytes) -> str | None:
        """Once a check holds that `notice`'s rekey left this device out: the session marked revoked (its
        writes refused from now on), and what this device wrote that the rekey did not carry over, said
        (_left_here, read before the mark: a pull's answer names it). `on`: the announce key of the members
        slot the check read; None, nothing marked, if the session is on it no longer: a new write code
        imported while the check ran (which can take the store's timeout) lists this device in the new
        generation, and a mark then would refuse its writes for good."""
        # the entries of the slot's "c", as the caller's read of it found them: a kept writer's later freeze
        entries = self.members.carried_as_seen(sid)
        left = await self._left_here(sid, notice, me, entries)
        # how far it carried this device's log over, kept with the mark (raised, if a later read finds it carried
        # further): what was written past it is held here only, which `rm` and the clean-up keep until a new
        # code imported sends it
        await self.ctx.db.mark_revoked(sid, carried_past(notice, entries, me), on=on)
        await pause_for_tests("rekey.marked")  # (the tests hold here: the check's mark, or none, committed)
        remote = await self.ctx.db.remote(sid)
        if remote is None or bytes(remote["announce_pk"]) != on:
            return None
        return left

    async def _left_here(self, sid: str, notice: dict, me: bytes, entries: Sequence[dict] = ()) -> str:
        """What this device wrote that a rekey leaving it out did not carry over, said (rekeycarried.left_here):
        past the notice's "s" for head key `me`, or the further seq of a kept writer's entry that holds."""
        return await left_here(self.ctx.db, sid, carried_past(notice, entries, me))
