"""Rotating a shared session's key (rekey), and taking another device's rekey.

A rekey is three steps: the new keys and the intent written here (a rekey-pending record, one atomic
file), the notice published in the old members slot, then the switch (keys rotated, the new slot
announced, this device's log pushed under the new key). The record goes first and goes last: a
crash at any step leaves it, and the next pull of the session (the first round after a start)
finishes the rekey from it. A device taking another's rekey keeps such a record while it switches (the switch
itself: rekeyswitch.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from ..storage.errors import read_only, revoked
from ..storage.testhooks import pause_for_tests
from ..stores import StaleHead, Store, StoreError
from . import dagcbor
from .context import SyncContext
from .errors import ImportError_, crash_point
from .frozen import is_frozen, merge_frozen
from .members import Members, announce_key
from .membersobject import member_entries, member_name
from .mirrorstrict import every_store, held_everywhere, not_every_store
from .pusher import Pusher
from .rekeycarried import carried_entry
from .rekeyconfirm import NoticeCheck
from .rekeyfreeze import OTHERS_READS, applied_past, dropped_before, freeze_dropped, pulled_past, shut_out_since
from .rekeyjoined import joined_apart, made_before, rekeyed_with_joined, with_joined, with_kept
from .rekeykept import by_kept, dropped_author, kept_from_dropped
from .rekeynotice import RekeyNotices
from .rekeyowed import OwedPush
from .rekeyproof import same_notice
from .rekeyswitch import KeySwitch
from .slotrestore import served_stale

log = logging.getLogger("sessiond.sync")


class Rekeyer:
    """Rekeys sessions (this device's own rekey) and takes the rekeys of other devices."""

    def __init__(self, ctx: SyncContext, members: Members, pusher: Pusher):
        self.ctx = ctx
        self.members = members
        self.pusher = pusher
        self.notices = RekeyNotices(ctx, pusher)  # this rekey's notice and its claim in this device's head
        self.check = NoticeCheck(ctx, members)  # another device's notice checked before it is taken
        # sessions whose switch to a new key left the push of this device's log to the switch at the end of the
        # chain of rekeys it is catching up through (KeySwitch._switch_key); paid (owed.settle) if the chain stops short
        self.owed = OwedPush(ctx, pusher)
        self.switch = KeySwitch(ctx, members, pusher, self.owed)  # the switch to a new key (rekeyswitch.py)

    async def rekey(self, sid: str, drop: Sequence[str] = (), *, drop_all: bool = False) -> dict:
        """Rotate the session key. Every writer device except those in `drop` (every one, with
        `drop_all`) gets the new key, sealed to its head key, through a notice in the old members slot;
        everyone else (read-only followers, old codes) can read nothing written from now on."""
        ctx = self.ctx
        access = (await ctx.db.get_session(sid))["access"]
        if access == "revoked":  # its members slot has a rekey already
            raise revoked(sid, "rekey it")
        if access == "read":  # no write secret: a rekey is its writers' to make
            raise read_only(sid, "rekey it")
        async with ctx.rekey_lock(sid):
            if ctx.keys.rekey_pending(sid) is not None:
                await self.resume(sid)  # an earlier one, cut short: finish it first
            old_key, old_write = ctx.keys.session_key(sid), ctx.keys.write_secret(sid)
            remote = await ctx.db.remote(sid)
            if remote is None:  # neither shared from here nor imported: its owner's, kept here alone
                raise ImportError_(
                    "not_shared", f"session {sid} was never shared: no other device has its key, so nothing to rekey"
                )
            if old_key is None or old_write is None:
                raise ImportError_(
                    "conflict",
                    f"only a device that can write {sid} and has shared it can rekey it",
                    reason="read_only",
                )
            store = await ctx.store_for(sid)
            slot = every_store(store)  # (a mirror's stores each read and written: mirrorstrict.py)
            my_pk = ctx.keys.head_pk(sid)
            old_announce = bytes(remote["announce_pk"])
            new_key, new_write = os.urandom(32), os.urandom(32)
            new_announce = bytes(announce_key(new_write).verify_key)
            # the last attempt's notice, refused as stale: some stores of a mirror may have taken it all the same
            tried: tuple[dict, list[dict], list[dict]] | None = None
            already: list[str] = []
            restored: bool | None = None  # (the stale slot's restore: not tried, or whether it wrote the slot)
            for _attempt in range(5):
                rev, members, notice, frozen = await self.members.read_slot(slot, sid, old_key, old_announce)
                if notice is None and tried is None and rev < remote["members_rev"] and restored is not False:
                    if restored:  # served as old after it was written again (the store lies): writers would be left out
                        raise served_stale(sid, store.url, rev, remote["members_rev"], own=store is ctx.store)
                    # the store serves the slot older than this device read it (its host restored a backup): written
                    # again from the writers known here, as a pull's restore does, and read again; else the writers
                    # let in since would get no key
                    restored = await self.members.restore(sid)
                    if restored:
                        continue
                joined = None
                if notice is not None and tried is not None and same_notice(notice, tried[0]):
                    # a writer that joined on another store of the mirror at the notice's revision: the notice made
                    # again with it boxed, as on one store (rekeyjoined.py); it was written again as it was, the
                    # writer left out
                    joined = await joined_apart(self.members, slot, sid, old_key, old_announce, tried[2])
                if joined is not None:
                    members, frozen, notice = with_joined(members, joined), joined.frozen, None
                elif notice is not None and tried is not None and same_notice(notice, tried[0]):
                    # this rekey's own, the highest of every store of a mirror (the one each device reads there):
                    # written again a revision on, so that the stores that refused it (holding another entry of that
                    # revision, another device's notice perhaps, which gives way) hold it too, and finished once
                    # every store took it. Refused again (written meanwhile): looked at again
                    record, keep, members = tried
                    carried = self.members.carried_as_seen(sid)  # (kept writers' entries since: kept)
                    try:
                        await self.notices.publish(slot, sid, old_key, old_write, rev, members, record, carried)
                    except StaleHead:
                        continue
                    break
                if notice is not None and tried is not None and slot is not store:
                    # ours sent, some stores of a mirror may hold it: not given way to a writer this rekey drops, as
                    # at its resume (was: its pull took that writer's notice, into its generation: rekeykept.py)
                    author = dropped_author(notice, members, tried[0], my_pk)
                    if author is not None:
                        raise kept_from_dropped(sid, author, store.url)
                if notice is not None:
                    await self.notices.withdraw(sid, old_announce)  # ours never reached the store
                    ctx.keys.clear_rekey_pending(sid)
                    raise await self._rekeyed_already(sid, notice, store, members)
                # each writer by its device id, or by its head key's start when its id is not known (its log
                # never read), as `sessiond devices` lists it: the name `--drop` takes
                others = {member_name(m) for m in members if m["head_pk"] != my_pk}
                # no refusal for those a rekey dropped before (a drop asked again after a crash): named so
                already, own, capped = await dropped_before(
                    ctx, self.members, store, sid, drop, others, frozen, self.notices.claims, members
                )
                unknown = [d for d in drop if d not in others and d not in already]
                if unknown:
                    await self.notices.withdraw(sid, old_announce)
                    ctx.keys.clear_rekey_pending(sid)
                    raise ImportError_(
                        "unknown_device",
                        f"no writer device {', '.join(map(repr, unknown))} in session {sid} to drop (its other "
                        f"writers: {', '.join(sorted(others)) or 'none'}), nor one a rekey dropped"
                        + (
                            f" as far as the first {OTHERS_READS} reads of the other writers' rekeys tell"
                            if capped
                            else ""
                        )
                        + ": nothing was rekeyed. A device that is no writer (one that imported a read-only code, or "
                        f"holds a code it has not imported) reads what the session's current key opens; any rekey "
                        f"shuts it out of all written afterwards: `sessiond rekey {sid}` (no --drop), and share codes "
                        f"made before it stop working",
                    )
                # all dropped by the rekey here that made the current key, nothing let them back in since (no code
                # issued here since, the slot as this device last saw it): done, as answered. Else (a frozen log,
                # another writer's rekey, a code since) nothing tells what the device reads now: rekeyed (none new
                # dropped)
                if already and tried is None and set(drop) <= set(own) and await shut_out_since(ctx, sid, rev):
                    return {"session": sid, "kept": sorted(others), "dropped": already, "already_dropped": already}
                keep = [m for m in members if m["head_pk"] != my_pk and member_name(m) not in drop and not drop_all]
                dropped = [m for m in members if m["head_pk"] != my_pk and m not in keep]
                fresh, seqs = await freeze_dropped(ctx, store, sid, dropped)
                await pause_for_tests("rekey.frozen")  # (the tests hold it here: the dropped logs frozen, no record)
                for _again in range(3):  # frozen again: those this device applied past the freeze (a newer head)
                    ahead = await pulled_past(ctx, sid, dropped, seqs)
                    if not ahead:
                        break
                    more, more_seqs = await freeze_dropped(ctx, store, sid, ahead)
                    fresh = [f for f in fresh if f["k"] not in {bytes(m["head_pk"]) for m in ahead}] + more
                    seqs.update(more_seqs)
                logs = merge_frozen(frozen, fresh)
                # frozen by an earlier rekey and not again by this one (a writer let back in, its log not read
                # now): carried on as it was, how far not known here
                before = {bytes(f["k"]) for f in frozen} - {bytes(f["k"]) for f in fresh if f in logs}
                record = {
                    "k": new_key,
                    "w": new_write,
                    "a": new_announce,
                    "m": member_entries(keep),
                    "o": old_announce,
                    "own": True,
                    # the dropped writers' logs as they stand, for the new generation (and those frozen before)
                    "f": logs,
                    # how far each is carried over, for the notice: what a dropped writer wrote past it reached
                    # no other device, which it says once it learns of the rekey
                    "s": [{"k": pk, "s": n} for pk, n in sorted(seqs.items()) if pk not in before],
                }
                logs = await self.switch.frozen_on(sid, record)
                # boxes are random: made once, kept. With what the new slot will hold and the old one does not
                record["n"] = dagcbor.encode(self.notices.notice(sid, record, [f for f in logs if f not in frozen]))
                try:  # a notice or a new slot past the cap, refused only once recorded and claimed (the notice
                    # out, for the slot), was resumed for good
                    self.notices.sealed(sid, old_key, members, record)
                    self.switch.fits(sid, record, logs)
                except ImportError_:
                    await self.notices.withdraw(sid, old_announce)  # (an attempt before, refused as stale, claimed)
                    ctx.keys.clear_rekey_pending(sid)
                    raise
                ctx.keys.set_rekey_pending(sid, dagcbor.encode(record))
                crash_point("rekey:pending")
                await self.notices.claim(sid, record)  # this device's head claims the notice before it is published
                crash_point("rekey:claimed")
                try:  # (on a mirror, published once every store took it: else NotEveryStore, the record kept)
                    await self.notices.publish(slot, sid, old_key, old_write, rev, members, record)
                except StaleHead:
                    tried = (record, keep, members)
                    continue  # the slot changed meanwhile (a writer joined, or another rekey): look again
                break
            else:
                busy = f"could not rekey {sid}: its members list kept changing"
                if tried is not None and slot is not store:  # some stores of a mirror may hold the notice: kept
                    raise ImportError_(
                        "busy",
                        f"{busy}, and its notice may be on some stores of the mirror already: the next pull "
                        f"(`sessiond sync {sid}`) finishes the rekey, or takes another device's that came first",
                    )
                await self.notices.withdraw(sid, old_announce)
                ctx.keys.clear_rekey_pending(sid)
                raise ImportError_("busy", f"{busy}; try again")
            self._published(sid, record)
            crash_point("rekey:published")
            await pause_for_tests("rekey.published")  # (the tests hold it here: the notice out, no new slot)
            await self.switch.finish(sid, record)
        log.info("rekeyed", extra={"session": sid, "event": "rekey"})
        return {
            "session": sid,
            "kept": [member_name(m) for m in keep],
            # those dropped before too, so that a drop asked again answers as it did, and named as such
            "dropped": [member_name(m) for m in members if m["head_pk"] != my_pk and m not in keep] + already,
            "already_dropped": already,
        }

    async def resume(self, sid: str, *, again: int = 5) -> None:
        """Finish a rekey that a crash cut short (the caller holds the session's rekey lock). Its notice refused
        as stale (the old slot written meanwhile: another device's rekey, a writer joined), the slot is looked
        at again, `again` times at most."""
        ctx = self.ctx
        raw = ctx.keys.rekey_pending(sid)
        if raw is None:
            return
        record = dagcbor.decode(raw)
        await pause_for_tests("rekey.resuming")  # (the tests hold it here: nothing of the rekey read or done yet)
        remote = await ctx.db.remote(sid)
        old_key, old_write = ctx.keys.session_key(sid), ctx.keys.write_secret(sid)
        if (
            record.get("own")
            and remote is not None
            and old_key != record["k"]
            and bytes(remote["announce_pk"]) != record["a"]
        ):
            # this device's own rekey: was its notice published?
            assert old_key is not None  # this device's own rekey began with the key it held
            store = await ctx.store_for(sid)
            slot = every_store(store)  # (a mirror's stores each read: one that does not answer fails the resume)
            old_announce = bytes(remote["announce_pk"])
            read: Store = slot
            try:
                rev, members, notice = await self.members.read_members(slot, sid, old_key, old_announce)
            except (StoreError, ImportError_) as exc:
                # published (`p`: every store of a mirror took it), a store of it down: the slot read as a pull reads
                # it, from the stores that answer; nothing is written to it but where another wrote over it (was:
                # every pull failed until that store came back, the device left on the old key)
                if not (record.get("p") and not_every_store(exc)):
                    raise
                read = store
                rev, members, notice = await self.members.read_members(store, sid, old_key, old_announce)
            if "n" not in record:  # a record from before notices named their author: made here, once
                record["o"] = old_announce
                record["n"] = dagcbor.encode(self.notices.notice(sid, record, ()))
                ctx.keys.set_rekey_pending(sid, dagcbor.encode(record))
            replaced = notice is not None and not same_notice(notice, record)
            if (
                notice is not None
                and replaced
                and made_before(sid, notice, record, ctx.keys.head_pk(sid), ctx.keys.head_key(sid))
            ):
                # this rekey's first notice, made again since for a writer that joined (rekeyjoined.py): the record's
                # written over it, claimed, with the writers it boxes
                replaced, notice, members = False, None, with_kept(members, record)
            # published (`p`); or killed as the store took its notice, before its record noted it: the slot is past
            # the revision the notice was sent for (`r`, noted just before: NoticeWriter.publish), which the notice
            # took then (a device whose rekey came first took that revision itself: a store refuses a second entry
            # there), another written over it since (was: taken for another device's rekey that came first, the
            # rekey given up, and the pull took the other notice: rekeyed into the generation of a writer it had
            # dropped). Not on a mirror: there the notice ranked first of two of one revision (two rekeys at once,
            # each killed between its stores) is written again a revision on by its author's resume, so another
            # device's rekey that won is past `r` too (mirrorstrict.py): only `p` says this one was published. Nor
            # for the notice of a writer this rekey keeps (its log claims it), which may be past `r` with this one never
            # taken (rekeykept.by_kept)
            sent = record.get("p") or (
                replaced
                and slot is store
                and isinstance(record.get("r"), int)
                and rev > record["r"]
                and not await by_kept(self.ctx, sid, notice, store, members, record, old_announce)
            )
            if replaced and not sent and slot is not store and isinstance(record.get("r"), int):
                # on a mirror, sent (`r`: some stores may hold it) and another notice the highest: not given up to one
                # by a writer this rekey drops (was: its pull took it, rekeyed into that writer's generation), past `r`
                # or ranked over it at `r`, nor finished (rekeykept.py)
                author = dropped_author(notice, members, record, ctx.keys.head_pk(sid))
                if author is not None:
                    raise kept_from_dropped(sid, author, store.url)
            if replaced and not sent:
                await self.notices.withdraw(sid, old_announce)
                ctx.keys.clear_rekey_pending(sid)  # another device's rekey came first: the pull takes it
                log.warning("rekey abandoned: another device rekeyed first", extra={"session": sid})
                return
            if replaced:
                # this device's notice was published (as above), and another is in its place: no writer
                # writes over a notice but its author, and the slot's key is one the writers this rekey dropped
                # hold too. Its rekey stands: finished, its claim kept (was: taken for another device's rekey that
                # came first, the claim withdrawn and the rekey given up, and the pull then took the other notice,
                # which nothing contradicted any more: rekeyed by a writer it had dropped)
                log.warning(
                    "the old members slot holds another notice than the one this device's rekey published (written"
                    " over by a holder of the old slot's key: a writer the rekey dropped); finishing this rekey",
                    extra={"session": sid, "event": "rekey"},
                )
            elif notice is None or not held_everywhere(read, b"\xed" + old_announce):
                # not out, or the highest of a mirror's stores but not held by them all (killed between two stores'
                # writes, or refused by one for another device's notice, which gives way to it): written (again, a
                # revision on) to every store, and only then counted as published
                assert old_write is not None  # an own rekey needs the write secret (Rekeyer.rekey checks it)
                carried: Sequence[dict] = ()
                joined = (  # (not for a rekey that kept no other writer, an unshare: one that joined is not kept)
                    None
                    if notice is None or not record["m"]
                    else await joined_apart(self.members, read, sid, old_key, old_announce, members)
                )
                if joined is not None:  # (a writer joined on another store at its revision: boxed, rekeyjoined.py)
                    members, notice = rekeyed_with_joined(self.notices, sid, record, members, joined), None
                    ctx.keys.set_rekey_pending(sid, dagcbor.encode(record))
                if notice is None:
                    try:  # past the cap (writers joined since, or recorded by a sessiond that measured it only here):
                        # given up, as it would be refused at every resume
                        self.notices.sealed(sid, old_key, members, record)
                        self.switch.fits(sid, record, await self.switch.frozen_on(sid, record))
                    except ImportError_:
                        await self.notices.withdraw(sid, old_announce)
                        ctx.keys.clear_rekey_pending(sid)
                        raise
                    await self.notices.claim(sid, record)
                else:
                    carried = self.members.carried_as_seen(sid)  # (as the rekey's own retry: kept writers' entries)
                try:
                    await self.notices.publish(slot, sid, old_key, old_write, rev, members, record, carried)
                except StaleHead:
                    if again <= 0:
                        raise ImportError_(
                            "busy", f"could not rekey {sid}: its members list kept changing; try again"
                        ) from None
                    return await self.resume(sid, again=again - 1)  # (read again: another's notice gives way)
            else:  # published, perhaps killed before it was forgotten as a gc candidate: the old slot names
                # it, which gc no longer reads once this device has switched, and the devices yet to take
                # the rekey read it there
                await self.notices.named(store, old_announce)
            self._published(sid, record)
        await self.switch.finish(sid, record)
        log.info("finished an interrupted rekey", extra={"session": sid, "event": "rekey"})

    def _published(self, sid: str, record: dict) -> None:
        """This device's rekey `record`'s notice is in the old slot: its record says so (`p`), so that a resume
        finding another notice there takes it for what it is, a writer of the old slot's key writing over it (a
        writer the rekey dropped), not another device's rekey that came first (resume)."""
        if not record.get("p"):
            record["p"] = True
            self.ctx.keys.set_rekey_pending(sid, dagcbor.encode(record))

    async def _rekeyed_already(self, sid: str, notice: dict, store: Store, members: list[dict]) -> ImportError_:
        """Why this device cannot rekey a session whose members slot holds `notice`: another device's rekey,
        which it takes at its next pull; one that left this device out (then revoked here, as a pull makes
        it); or a notice no device takes (its named author does not claim it, or another member contradicts
        it: rekeyproof), which stays in the slot, so that the way on is a new session (rekeyproof.fork_way)."""
        try:
            await self.confirm(sid, notice, store, members)
        except ImportError_ as exc:
            if exc.kind == "revoked":  # it takes no key at its next pull: it was rekeyed out (marked so: confirm)
                return exc
            if exc.kind in ("rekey_unconfirmed", "rekey_conflict"):
                return ImportError_(exc.kind, f"session {sid} cannot be rekeyed past its notice: {exc}")
        return ImportError_(
            "conflict",
            f"session {sid} was rekeyed by another device at the same time; "
            f"this device takes that key at its next pull (`sessiond sync`), "
            f"then run rekey again if you still want to",
            reason="rekeyed",
        )

    async def confirm(self, sid: str, notice: dict, store: Store, members: list[dict]) -> dict | None:
        """rekeyconfirm.NoticeCheck.confirm: the secret of a notice checked to be its author's rekey."""
        return await self.check.confirm(sid, notice, store, members)

    async def take(self, sid: str, notice: dict, store: Store, members: list[dict]) -> bool:
        """A rekey notice in the members slot: switch to it once `confirm` holds, or learn that access
        ended (ImportError_). False if this device had switched already."""
        keys = self.ctx.keys
        secret = await self.confirm(sid, notice, store, members)
        if secret is None:
            return False
        my_pk, boxed = keys.head_pk(sid), {bytes(b["k"]) for b in notice.get("b", [])}
        record: dict = {
            "k": bytes(secret["k"]),
            "w": secret.get("w") if keys.write_secret(sid) else None,
            "a": bytes(secret["a"]),
            # the new generation's other writers: those of the old slot the notice has a box for
            "m": member_entries(m for m in members if bytes(m["head_pk"]) in boxed and m["head_pk"] != my_pk),
            "g": True,  # (records from before it named no generation: "m" was empty)
            "own": False,
        }
        dropped = [m for m in members if bytes(m["head_pk"]) not in boxed and m["head_pk"] != my_pk]
        applied = await applied_past(self.ctx, sid, store, notice, dropped)
        # the frozen logs the notice names (its author claims them with it: RekeyNotices.notice), for the new slot
        # this device writes as it switches: its author may never write it (a notice of sessiond before it names
        # none)
        named = [f for f in notice.get("f", []) if is_frozen(f)] if isinstance(notice.get("f"), list) else []
        if named or applied:
            record["f"] = merge_frozen(named, [f for f, _ in applied])
        if applied:
            old_key, old_write = keys.session_key(sid), keys.write_secret(sid)
            if old_key is not None and old_write is not None:
                # how far, signed, for the old slot once the new one holds these freezes (KeySwitch.finish): what the
                # dropped writers, who cannot open the new slot, learn of it (rekeycarried)
                head_key = keys.head_key(sid)
                record["c"] = [carried_entry(head_key, notice, bytes(f["k"]), seq) for f, seq in applied]
                record["ck"], record["cw"] = old_key, old_write
        keys.set_rekey_pending(sid, dagcbor.encode(record))  # a crash while switching resumes it
        if (await self.ctx.db.get_session(sid))["access"] == "revoked":
            # an earlier notice left it out; this one, which replaced it, boxes the new key to it: it is in
            # the new generation (its slot lists it), and writes again. (As an import over it sets access.)
            await self.ctx.db.apply_remote(sid, {}, access="write" if record["w"] is not None else "read")
        await self.switch.finish(sid, record)
        log.info("took new session key", extra={"session": sid, "event": "rekey"})
        return True
