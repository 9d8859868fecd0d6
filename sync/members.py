"""The members slot of a shared session: who writes it.

Who writes a session is recorded in its *members* slot: an S5 registry entry signed by the session's
announce key (derived from the write secret, so every holder of a read-write code can add itself),
whose data is `0x1e | BLAKE3(members object) | salt (14)`. The members object, encrypted under
`members_key(session key, salt)`, lists every writer's head public key and device id. A device follows
exactly the heads listed there: a head signed by any other key is never read. A rekey (rekey.py)
leaves its notice in this slot too.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from ..storage.testhooks import pause_for_tests
from ..stores import ObjectMissing, StaleHead, Store, StoreError, check_object
from ..stores.bounded import bounded
from ..stores.cid import digest
from ..stores.errors import failing
from ..stores.registry import RegistryEntry
from . import dagcbor
from .bounded import LRU, KeyedRuns
from .context import SyncContext
from .crypto import DecryptError, members_key
from .errors import ImportError_, crash_point, newer_format, store_failed
from .frozen import decode_frozen, frozen_adds, merge_frozen, put_back_named
from .membersentry import LOST, announce_key, bad_slot, checked_entry
from .membersobject import (
    MEMBERS_MAX_BYTES,
    MEMBERS_VERSION,
    SALT_LEN,
    T_MEMBERS,
    encoded_keeping,
    members_object,
    open_members,
    parse_carried,
    parse_members,
    seal_members,
    unknown_of,
)
from .pages import LogError, NewerFormat, check_version
from .slotrestore import restore

log = logging.getLogger("sessiond.sync")

# sessions whose members list, as last read, is kept for the follower (Members.read_members, cached=True)
MEMBERS_KEPT = 1024
READS_AGAIN = 3  # times a read of the slot reads its entry again, its object gone (Members.read_slot)


def _swapped(frozen: Sequence[dict], replace: Mapping[bytes, dict] | None) -> list[dict]:
    """`frozen` with each entry whose manifest hash `replace` names swapped for the entry put back in its place."""
    return [dict(replace.get(bytes(f["h"]), f)) if replace else dict(f) for f in frozen]


class SlotRead(NamedTuple):
    """What a members slot holds (Members.read_apart): its revision, members, rekey notice or None, frozen logs,
    the entries of its "c" (not verified yet: rekeycarried.py) and the fields this sessiond does not know."""

    revision: int
    members: list[dict]
    notice: dict | None
    frozen: list[dict]
    carried: list[dict]
    unknown: dict


class Members:
    """Reads a session's members slot and adds writers to it."""

    def __init__(self, ctx: SyncContext):
        self.ctx = ctx
        # Per session: the members slot's entry as last read (key, revision, data), the session key it
        # was opened with, and what it said. The entry names its object by hash: while the slot holds the
        # same entry, its object says the same, so a follower's pull reads the slot's head and not the
        # object again (nor decrypts and decodes it): one store request less per pull.
        # Last, the entries of its "c" (a notice's slot: how far kept writers carried the logs of the writers it
        # drops past it, sync/rekeycarried.py), not verified yet.
        self._seen: LRU[str, tuple[bytes, int, bytes, bytes, list[dict], dict | None, list[dict], list[dict]]] = LRU(
            MEMBERS_KEPT
        )
        # Per session: when this process last read the slot's object from the store, or wrote it
        # (time.monotonic()): what it says stays known while the entry does not change, but that the store
        # still holds it is known only as of then (object_read_ago).
        self._object_read: LRU[str, float] = LRU(MEMBERS_KEPT)
        # Per session: the fields of the members object last read that this sessiond does not know (a newer
        # one's), written again with the slot (ensure_member): dropped, they would be lost to every device.
        self._unknown: LRU[str, dict] = LRU(MEMBERS_KEPT)
        # Per session: the restore under way (restore): one asked meanwhile takes its result
        self._restores: KeyedRuns[bool] = KeyedRuns()

    def object_read_ago(self, sid: str) -> float | None:
        """Seconds since this process last read `sid`'s members object from the store or wrote it; None if
        it has not."""
        at = self._object_read.get(sid)
        return None if at is None else time.monotonic() - at

    def last_known(self, sid: str, announce_pk: bytes) -> list[dict] | None:
        """The writers of `sid`'s members slot (announce key `announce_pk`) as this process last read or
        wrote it, with no store read; None if it has not since it started."""
        seen = self._seen.get(sid)
        if seen is None or seen[0] != b"\xed" + announce_pk:
            return None
        return [dict(m) for m in seen[4]]

    def notice_as_seen(self, sid: str, announce_pk: bytes) -> bool:
        """Whether `sid`'s members slot of announce key `announce_pk`, as this process last read or wrote it,
        held a rekey's notice (the session moved on past it), with no store read; False if not known."""
        seen = self._seen.get(sid)
        return seen is not None and seen[0] == b"\xed" + announce_pk and seen[5] is not None

    def carried_as_seen(self, sid: str) -> list[dict]:
        """The entries of the "c" of `sid`'s members slot as this process last read or wrote it (none if not
        known): each still to be verified against the notice the slot holds (rekeycarried.carried_past)."""
        seen = self._seen.get(sid)
        return [dict(e) for e in seen[7]] if seen is not None else []

    def unknown_as_read(self, sid: str) -> dict:
        """The fields of `sid`'s members object as last read that this sessiond does not know (unknown_of)."""
        return dict(self._unknown.get(sid) or {})

    def frozen_as_seen(self, sid: str, entry: RegistryEntry) -> list[dict] | None:
        """The frozen logs of `sid`'s members slot as this process last read or wrote its object, if the slot holds
        `entry` (its key, revision and data: the same object) since; None if not, or not known."""
        seen = self._seen.get(sid)
        if seen is None or seen[:3] != (entry.pk, entry.revision, bytes(entry.data)):
            return None
        return [dict(f) for f in seen[6]]

    async def read_members(
        self,
        store: Store,
        sid: str,
        session_key: bytes,
        announce_pk: bytes,
        min_rev: int = 0,
        *,
        cached: bool = False,
        entry: RegistryEntry | None = None,
        unchanged: bool = False,
    ) -> tuple[int, list[dict], dict | None]:
        """(revision, members, rekey notice or None) of a session's members slot: read_slot without the
        frozen logs."""
        rev, members, notice, _ = await self.read_slot(
            store, sid, session_key, announce_pk, min_rev, cached=cached, entry=entry, unchanged=unchanged
        )
        return rev, members, notice

    async def read_slot(
        self,
        store: Store,
        sid: str,
        session_key: bytes,
        announce_pk: bytes,
        min_rev: int = 0,
        *,
        cached: bool = False,
        entry: RegistryEntry | None = None,
        unchanged: bool = False,
    ) -> tuple[int, list[dict], dict | None, list[dict]]:
        """(revision, members, rekey notice or None, frozen logs) of a session's members slot. `cached`: if the slot
        holds the entry read last time, what its object said then (the follower; an audit reads it again).
        `entry`: the slot's entry as the caller has just read it from `store` (not read again).
        `unchanged` (with `cached`): the store has just said that the slot did not change since this
        process last looked (a follower's poll: Store.head_versions, head_changes), so what it said as
        last read or written here is taken without reading even its head. An object gone is taken as the slot
        written over meanwhile, its old object freed by its writer's gc: the entry is read again."""
        pk = b"\xed" + announce_pk
        if cached and unchanged:
            seen = self._seen.get(sid)
            if seen is not None and seen[0] == pk and seen[3] == session_key and seen[1] >= min_rev:
                return seen[1], [dict(m) for m in seen[4]], seen[5], seen[6]
        entry = await checked_entry(store, sid, pk, min_rev, entry, self.ctx.timeout)
        got = await self._object(store, sid, session_key, pk, entry, cached)
        if isinstance(got, SlotRead):  # (as last read or written here)
            return got.revision, [dict(m) for m in got.members], got.notice, [dict(f) for f in got.frozen]
        entry, m = got
        members, notice, frozen = parse_members(m)
        self._unknown[sid] = unknown_of(m)
        self._seen[sid] = (
            pk,
            entry.revision,
            entry.data,
            session_key,
            [dict(m) for m in members],
            notice,
            frozen,
            parse_carried(m),
        )
        self._object_read[sid] = time.monotonic()
        await self.keep_frozen(sid, frozen)
        # what this device put for the slot and it no longer names: let go, for gc (SyncContext.named)
        await self.ctx.named(store, entry, written=False)
        return entry.revision, members, notice, frozen

    async def read_apart(
        self, store: Store, sid: str, session_key: bytes | Sequence[bytes], announce_pk: bytes
    ) -> SlotRead:
        """A members slot of `sid` that is not the one its pulls read (the old slot a kept writer writes how far it
        carried to: rekeycarried.py), read from `store`, its object too, all it holds returned; nothing of it
        taken as the session's slot in this process's memory (_seen, _object_read, _unknown): that is the current
        slot's, which a pull, a push or a verify reads meanwhile, and would put off the current slot's audit
        (object_read_ago) or lend its fields to the other slot's write. `session_key`: several, each tried (the first
        that opens it), for a slot whose generation is not known here."""
        pk = b"\xed" + announce_pk
        entry = await checked_entry(store, sid, pk, 0, None, self.ctx.timeout)
        keys = [session_key] if isinstance(session_key, bytes) else list(session_key)
        got = await self._object(store, sid, keys[0], pk, entry, False, keys)
        assert not isinstance(got, SlotRead)  # (not cached)
        entry, m = got
        members, notice, frozen = parse_members(m)
        await self.ctx.named(store, entry, written=False)
        return SlotRead(entry.revision, members, notice, frozen, parse_carried(m), unknown_of(m))

    async def _object(
        self,
        store: Store,
        sid: str,
        session_key: bytes,
        pk: bytes,
        entry: RegistryEntry,
        cached: bool,
        keys: Sequence[bytes] = (),
    ) -> tuple[RegistryEntry, dict] | SlotRead:
        """The members object the slot's `entry` names, read from `store`, opened and checked: (the entry, read
        again if its object was gone, and the object decoded); with `cached`, what the slot said as last read or
        written here if it holds the same entry since (a SlotRead). An object gone is taken as the slot written
        over meanwhile, its old object freed by its writer's gc: the entry is read again. `keys`: opened under the
        first of them that opens it (none: `session_key`)."""
        timeout = self.ctx.timeout
        for _ in range(READS_AGAIN):
            h, salt = entry.data[1:33], entry.data[33:]
            seen = self._seen.get(sid) if cached else None
            if seen is not None and seen[:4] == (pk, entry.revision, entry.data, session_key):
                return SlotRead(entry.revision, seen[4], seen[5], seen[6], seen[7], {})
            try:
                ct = await bounded(store.get_capped(h, MEMBERS_MAX_BYTES, "a members object"), timeout)
                break
            except ObjectMissing as exc:  # (the same entry read again: its object is lost)
                newer = await checked_entry(store, sid, pk, entry.revision, None, timeout)
                if (newer.revision, newer.data) == (entry.revision, entry.data):
                    raise bad_slot("damaged", sid, f"the members list of session {sid} cannot be read: {exc}") from None
                entry = newer
            except (TimeoutError, StoreError, OSError) as exc:
                if failing(exc):  # the store failed to answer, the list is not damaged
                    raise store_failed(exc, store.url) from None
                raise bad_slot("damaged", sid, f"the members list of session {sid} cannot be read: {exc}") from None
        else:
            raise ImportError_("busy", f"the members slot of session {sid} kept changing as it was read; will retry")
        try:
            check_object(h, ct)
            m = dagcbor.decode(open_members(ct, keys or [session_key], salt))
        except (StoreError, DecryptError, dagcbor.DagCborError) as exc:
            raise bad_slot("damaged", sid, f"the members list of session {sid} cannot be read: {exc}") from None
        if not isinstance(m, dict) or m.get("ty") != T_MEMBERS or m.get("s") != sid:
            raise bad_slot("damaged", sid, f"the members object of session {sid} belongs to another (swapped objects)")
        try:
            check_version(m.get("v"), MEMBERS_VERSION, f"the members object of session {sid}")
        except NewerFormat as exc:  # not damage: this device is the one to mend (the slot is not written over)
            raise newer_format(f"the members slot of session {sid}", exc) from None
        except LogError as exc:
            raise bad_slot("damaged", sid, f"the members list of session {sid} cannot be read: {exc}") from None
        return entry, m

    async def known_frozen(self, sid: str) -> list[dict]:
        """The frozen logs of `sid` this device noted (keep_frozen): durable, unlike what this process read."""
        remote = await self.ctx.db.remote(sid)
        return decode_frozen(remote.get("frozen")) if remote is not None else []

    async def keep_frozen(
        self,
        sid: str,
        frozen: Sequence[dict],
        *,
        noted: Sequence[dict] | None = None,
        replace: Mapping[bytes, dict] | None = None,
    ) -> None:
        """Note `frozen` (frozen logs read in or written to `sid`'s members slot) in the database, merged
        with those noted before (a frozen log is never taken out of the slot): a slot the store lost is
        written again with them, whether or not this process read it (ensure_member). Nothing is written
        when they are noted already (each at its revision, or a later one: a head frozen anew replaces its older
        freeze), nor for a session not shared here yet (an import, before it is). `noted`: those noted, as the
        caller read the session's row: the row is not read again unless they lack some of `frozen` (then read
        fresh for the merge, so that none noted since that read is written over). `replace`: frozen logs put back
        (frozenrepair.py), by the hash of the lost manifest each takes the place of; one another writer put back,
        named in `frozen` in place of one noted here (the same head and revision), is noted in its place too
        (frozen.put_back_named)."""
        if not replace and (
            not frozen or (noted is not None and not frozen_adds(noted, frozen) and not put_back_named(noted, frozen))
        ):
            return
        remote = await self.ctx.db.remote(sid)
        if remote is None:
            return
        have = decode_frozen(remote.get("frozen"))
        swapped = _swapped(have, replace)
        # one put back by another writer, named in the slot in place of a lost one noted here: noted in its place
        swapped = _swapped(swapped, put_back_named(swapped, frozen))
        # a head not noted yet, or a later freeze of one (not only more of them); or one put back
        if swapped != have or frozen_adds(have, frozen):
            await self.ctx.db.set_remote(sid, frozen=dagcbor.encode(merge_frozen(swapped, frozen)))

    async def ensure_member(
        self,
        sid: str,
        *,
        extra: Sequence[dict] = (),
        slot: tuple[int, list[dict], list[dict]] | None = None,
        frozen: Sequence[dict] = (),
        rewrite: int | None = None,
        replace: Mapping[bytes, dict] | None = None,
    ) -> int:
        """Make sure this device (and every writer it knows of) is in the members list, and `frozen` (the
        logs of writers a rekey dropped) among its frozen logs. Returns the members revision. Needs the
        write secret. `slot`: the slot's revision, members and frozen logs as the caller has just read them
        (an import), or (0, [], []) for a slot that cannot exist yet (its write secret was made just now):
        the first attempt goes on from them without reading the slot; if the slot moved on meanwhile, the
        store refuses the write (StaleHead: an equal or higher revision) and the next attempt reads it.
        What the slot holds is kept: members and frozen logs are only ever added (those this device noted
        in its database too: keep_frozen).

        `rewrite`: the slot is written again even if it lists everyone (restore: a store lost it), at a
        revision past `rewrite` (the highest any store holds, or this device has seen). A slot that reads
        as missing or whose object is lost is written from what this device knows: its writers, and the
        frozen logs it noted (keep_frozen). Its revision is always past what this device has
        seen, so that the devices that read the slot before take the new one (not a rollback).

        `replace`: frozen logs put back (frozenrepair.py), each by the hash of the lost manifest whose entry it
        takes the place of (the same head key and revision: of two such, the first named is kept, so they are
        swapped, not merged); the slot is written when it names one of those."""
        ctx = self.ctx
        write_secret = ctx.keys.write_secret(sid)
        session_key = ctx.keys.session_key(sid)
        if write_secret is None or session_key is None:
            raise ImportError_(
                "conflict", f"this device cannot add writers to {sid} (no write secret)", reason="read_only"
            )
        ak = announce_key(write_secret)
        # the session's row, read once: its store, the frozen logs noted (keep_frozen), its members revision
        remote = await ctx.db.remote(sid)
        store = ctx.open_store(remote["store_url"] if remote else None)  # (ctx.store_for, from the row read)
        me = {"head_pk": ctx.keys.head_pk(sid), "device_id": ctx.db.device_id}
        known = [me, *extra, *[{"head_pk": p["head_pk"], "device_id": p["device_id"]} for p in await ctx.db.peers(sid)]]
        noted = decode_frozen(remote.get("frozen")) if remote is not None else []
        frozen = _swapped(merge_frozen(frozen, noted), replace)
        for attempt in range(5):
            try:
                if attempt == 0 and slot is not None:
                    rev, members, had = slot[0], [dict(m) for m in slot[1]], list(slot[2])
                else:
                    # the slot's object is read again only if the slot changed since this process last read
                    # or wrote it (the same entry names the same object: see _seen)
                    rev, members, notice, had = await self.read_slot(
                        store, sid, session_key, bytes(ak.verify_key), cached=True
                    )
                    if notice is not None:
                        # a rekey's notice: the session has moved on to another key and slot (the next pull
                        # takes it). Written over, the notice would be lost to every device not past it yet.
                        # The frozen logs asked for (a take's freezes past the notice's) are noted: this
                        # device's write of the next generation's slot carries them on (else lost to it)
                        await self.keep_frozen(sid, frozen, noted=noted if remote is not None else None)
                        return rev
            except ImportError_ as exc:
                if exc.kind != "missing" and not (rewrite is not None and exc.kind in LOST):
                    raise
                # (the frozen logs: those noted in the database, merged in above)
                rev, members, had = 0, [], []
                self._unknown.pop(sid, None)  # (a slot lost: nothing of it to keep)
            have = {m["head_pk"] for m in members}
            missing = [k for k in known if k["head_pk"] not in have]
            lost = _swapped(had, replace) != had  # (a frozen log put back in place of one the slot names)
            had = _swapped(had, replace)
            if rewrite is None and not missing and not frozen_adds(had, frozen) and not lost:
                # (an import's slot, read before the session was shared here)
                await self.keep_frozen(sid, had, noted=noted if remote is not None else None)
                await self._listed(sid, rev, remote)
                return rev
            # (the members revision as of the row read above: one noted since is the slot's, read or refused)
            rev = max(rev, rewrite or 0, remote["members_rev"] if remote else 0)
            merged = sorted({m["head_pk"]: m for m in members + missing}.values(), key=lambda m: m["head_pk"])
            logs = merge_frozen(had, frozen)
            obj = members_object(sid, merged, logs)
            plain = encoded_keeping(obj, self._unknown.get(sid) or {})
            salt = os.urandom(SALT_LEN)
            ct = seal_members(sid, plain, members_key(session_key, salt), len(merged))
            # noted for gc before its put, forgotten once the slot names it; the object it names before, if
            # this device put it, is let go then (SyncContext.put_to_name, named): not before the new one is
            # written, so that a kill in between leaves the slot naming an object still there
            entry = RegistryEntry.create(ak, rev + 1, b"\x1e" + digest(ct) + salt)
            async with ctx.put_to_name(store, sid, ct, entry.pk, entry.revision):
                crash_point("members:put")  # (tests: the members object put, the slot not written)
                await pause_for_tests("members.put")  # (the tests hold it here: put, the slot not written)
                try:
                    await bounded(store.set_head(entry), ctx.timeout)
                except StaleHead:
                    rewrite = None if rewrite is None else rewrite + 1  # (past what refused it, if it is gone)
                    # another writer changed the slot meanwhile: read it again and merge. The members object
                    # just put is referenced by no head: still a candidate, `sessiond gc` frees it
                    continue
                crash_point("members:set")  # (tests: the slot written over, the object it named not let go)
                await ctx.named(store, entry)
            # What the slot says now, as a read of it would find it: this device's own write does not make
            # its follower (nor the next ensure_member) read the object back from the store.
            written, notice, kept = parse_members(obj)
            # (no "c": a slot holding a notice is not written here)
            self._seen[sid] = (entry.pk, entry.revision, entry.data, session_key, written, notice, kept, [])
            self._object_read[sid] = time.monotonic()
            await ctx.db.set_remote(sid, members_rev=rev + 1, announced=1)
            await self.keep_frozen(sid, logs, noted=noted if remote is not None else None, replace=replace)
            return rev + 1
        raise ImportError_("busy", "could not update the members list (it kept changing); will retry")

    async def _listed(self, sid: str, rev: int, remote: dict | None) -> None:
        """This device found itself listed in the slot (revision `rev`): noted as announced, as a write of the
        slot notes it, or every start would resume a push of the session to list it (SyncState.pending_pushes),
        which finds it listed again and writes nothing. Only for the slot of the session's current key: a
        rekey under way lists the devices it keeps in a slot of its own. `remote`: the session's row, as the caller
        read it."""
        ws = self.ctx.keys.write_secret(sid)
        if (
            remote is not None
            and not remote["announced"]
            and ws is not None
            and bytes(announce_key(ws).verify_key) == bytes(remote["announce_pk"])
        ):
            await self.ctx.db.set_remote(sid, members_rev=max(rev, remote["members_rev"]), announced=1)

    async def restore(self, sid: str) -> bool:
        """Write `sid`'s members slot again if this device wrote it and the store lost it; carry it to the stores of
        a mirror that hold an older revision whole (slotrestore.restore). Returns whether it wrote the slot. One at
        a time per session: one asked while another runs (the follower's, `sessiond repair`'s, the republisher's)
        waits for it and takes its result, not a second revision racing the first (lock order: slotrestore.py)."""
        return await self._restores(sid, lambda: restore(self, sid))
