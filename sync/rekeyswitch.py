"""Going over to a rekey's new key (sync/rekey.py): the switch itself, for this device's own rekey and for another
device's it takes, and what the new members slot holds (the frozen logs, the cap it must fit under).

A switch rotates the keys, names the new members slot, writes it, and pushes this device's log under the new key (left
to the end of a chain of rekeys a device catches up through: rekeyowed.py); a rekey's record (KeyStore
.rekey_pending) goes last, so that a kill at any step is finished from it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..storage.testhooks import pause_for_tests
from . import dagcbor
from .context import SyncContext
from .crypto import members_key
from .errors import crash_point
from .frozen import merge_frozen
from .members import Members
from .membersobject import SALT_LEN, member_device, members_object, seal_members
from .pusher import Pusher
from .rekeycarried import write_carried
from .rekeyowed import OwedPush


class KeySwitch:
    """The switch to a rekey's new key (see the module's docstring), and the new slot it writes."""

    def __init__(self, ctx: SyncContext, members: Members, pusher: Pusher, owed: OwedPush):
        self.ctx = ctx
        self.members = members
        self.pusher = pusher
        self.owed = owed

    async def frozen_on(self, sid: str, record: dict) -> list[dict]:
        """The frozen logs of the new generation: those this rekey froze or carries on ("f"), and every one this
        device noted (Members.keep_frozen; the slot it read may lack some, which its write of the new slot merges
        in)."""
        return merge_frozen(record.get("f", []), await self.members.known_frozen(sid))

    def fits(self, sid: str, record: dict, logs: Sequence[dict]) -> None:
        """Refused (members_full) if the new members slot this rekey writes once it switches would be past the cap:
        this device and the writers kept, with the frozen logs `logs` (frozen_on: those of the writers it drops
        that wrote, ~130 bytes each in place of an entry, and every one frozen before: Members.ensure_member merges
        them in)."""
        me = {"head_pk": self.ctx.keys.head_pk(sid), "device_id": self.ctx.db.device_id}
        kept = [{"head_pk": m["k"], "device_id": member_device(m.get("d"))} for m in record["m"]]
        plain = dagcbor.encode(members_object(sid, [me, *kept], logs))
        seal_members(sid, plain, members_key(record["k"], bytes(SALT_LEN)), len(kept) + 1, frozen=len(logs))

    async def finish(self, sid: str, record: dict) -> None:
        """Switch to the new key of the rekey `record` (this device's own, or another's taken), then forget it."""
        # (a record an earlier sessiond wrote may name a writer of no known id "None")
        kept = [{"device_id": member_device(m.get("d")), "head_pk": m["k"]} for m in record["m"]]
        generation = record.get("own") or "g" in record  # "m" names every other writer kept
        frozen, take = record.get("f", []), not record.get("own")
        await self._switch_key(sid, record["k"], record["w"], record["a"], kept, generation, frozen, take=take)
        if record.get("c"):  # a take that froze dropped writers' logs past the notice: the new slot holds them
            crash_point("rekey:carry")  # (tests: switched, the old slot not written: the record finishes it)
            await write_carried(self.ctx, self.members, sid, record)
        self.ctx.keys.clear_rekey_pending(sid)

    async def _switch_key(
        self,
        sid: str,
        key: bytes,
        write: bytes | None,
        announce: bytes,
        members: list[dict],
        generation: bool,
        frozen: Sequence[dict] = (),
        *,
        take: bool = False,
    ) -> None:
        """Go over to the new key and members slot. `members`: the other writers the rekey kept; with
        `generation`, exactly those: every other device stops being followed here (a dropped writer keeps
        the old key and its own head, and whatever it writes from now on must reach no one), and the new
        slot, which this device's membership merges its known writers into, does not list it. The old peers
        go before the new slot is named (not announced in it yet): a push in between writes the slot with every
        writer this device knows (Pusher.push, ensure_member), which the slot keeps.
        `take`: another device's rekey taken. Its new slot holding the next rekey's notice already (a device
        catching up through a chain of rekeys, a generation at a time), this device's log is not pushed under
        this key, which no writer stays on: the pull takes the next notice, and the switch at the chain's end
        pushes it once (was: a push under each key, each written over by the next and left to gc). Killed in
        between, the next pull goes on along the chain to that end; a chain that stops short pays it
        (OwedPush.settle, which also finds it owed after a restart)."""
        self.ctx.keys.rotate(sid, key, write)
        crash_point("rekey:rotated")
        await pause_for_tests("rekey.rotated")  # (the tests hold it here: the keys rotated, the old slot named)
        if generation:
            await self.ctx.db.keep_peers(sid, [bytes(m["head_pk"]) for m in members])
        await self.ctx.db.syncstate.switch_slot(sid, announce)  # (its notices' walks dropped: settled)
        await pause_for_tests("rekey.switching")  # (the tests hold it here: the new slot named, not written)
        crash_point("rekey:switched")
        if write is not None:
            await self.members.ensure_member(sid, extra=members, frozen=frozen)
        crash_point("rekey:announced")
        await pause_for_tests("rekey.announced")  # (the tests hold it here: the new slot written, the log not pushed)
        db = self.ctx.db
        if await db.last_seq(sid) or (await db.sync_state(sid))["head_rev"]:
            if take and write is not None and self.members.notice_as_seen(sid, announce):  # (ensure_member read it)
                self.owed.note(sid)
                crash_point("rekey:push_left")
                await pause_for_tests("rekey.push_left")  # (the tests hold it here: switched, the next notice seen)
                return
            # this device's log, now under the new key: also a head that holds no operation (made for a
            # rekey's claim), which a device importing with the new key alone must be able to open
            await self.pusher.push(sid, force=True)
        self.owed.paid(sid)
