"""This device's rekey notice (docs/FORMATS.md §6): made, sealed as the old members slot's object and published there,
and the claim of it this device's own head carries (made, withdrawn); composed by rekey.py's Rekeyer."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from nacl.public import SealedBox
from nacl.signing import VerifyKey

from ..storage.clock import wall
from ..storage.testhooks import pause_for_tests
from ..stores import Store
from ..stores.bounded import bounded
from ..stores.cid import digest
from ..stores.registry import RegistryEntry
from . import dagcbor
from .context import SyncContext
from .crypto import members_key
from .errors import crash_point, describe
from .manifest import CLAIMS_KEPT
from .members import announce_key
from .membersobject import SALT_LEN, members_object, seal_members
from .pusher import Pusher
from .rekeyproof import notice_hash

log = logging.getLogger("sessiond.sync")


class RekeyNotices:
    """The notice of this device's rekey and its claim, for one daemon's sessions."""

    def __init__(self, ctx: SyncContext, pusher: Pusher):
        self.ctx = ctx
        self.pusher = pusher

    def notice(self, sid: str, record: dict, frozen: Sequence[dict]) -> dict:
        """The notice of this device's rekey (docs/FORMATS.md §6): a box for each kept writer and one for
        this device too (so that even without its record it can take its own rekey, as the others do),
        and this device's id as its author, which its own head's claim confirms. With `frozen`, the frozen
        logs the new slot will hold (rekey.py) that the old slot does not (this rekey's freezes, and those noted
        here that the slot lacks), claimed with it: a device taking the notice writes them into the new slot
        itself, should this device never write it (killed after its notice, then dropped by a later rekey, or
        lost: they were else in its rekey record only, and lost for good). Those of the old slot the devices
        taking the notice noted as they read it; the notice does not carry them again (its size: the old slot
        may be near the cap with them)."""
        secret = dagcbor.encode({"a": record["a"], "k": record["k"], "w": record["w"]})
        pks = [m["k"] for m in record["m"]] + [self.ctx.keys.head_pk(sid)]
        boxes = [{"k": pk, "x": SealedBox(VerifyKey(pk[1:]).to_curve25519_public_key()).encrypt(secret)} for pk in pks]
        notice = {"a": record["a"], "b": boxes, "d": self.ctx.db.device_id, "t": int(wall())}
        if "s" in record:  # (a record an earlier sessiond wrote, resumed, has none)
            notice["s"] = record["s"]
        if frozen:  # (absent when empty, as a members object's)
            notice["f"] = list(frozen)
        return notice

    async def claim(self, sid: str, record: dict) -> None:
        """Add this rekey's claim to this device's manifest and push it (under the old key, where the
        devices taking the notice look first): in place of an earlier claim of the same generation (a
        rekey that had to start over). A push that fails fails the rekey, which resumes from its record."""
        claim = {"a": record["a"], "h": notice_hash(dagcbor.decode(record["n"])), "o": record["o"]}
        claims = [c for c in await self.claims(sid) if c["o"] != record["o"]] + [claim]
        await self.ctx.db.save_sync_state(sid, rekey_claims=dagcbor.encode(claims[-CLAIMS_KEPT:]))
        await self.pusher.push(sid, force=True)

    async def withdraw(self, sid: str, old_announce: bytes) -> None:
        """Take back a claim whose notice was never published (another device's rekey came first, or this
        one gave up): a device taking the other notice would otherwise see two rekeys. If the push fails,
        the next one carries the change (and this device's switch to the other key pushes anyway)."""
        claims = await self.claims(sid)
        if not any(c["o"] == old_announce for c in claims):
            return
        kept = [c for c in claims if c["o"] != old_announce]
        await self.ctx.db.save_sync_state(sid, rekey_claims=dagcbor.encode(kept) if kept else None)
        try:
            await self.pusher.push(sid, force=True)
        except Exception as exc:  # said here; the next push carries it
            log.warning(
                "could not push the withdrawal of a rekey claim", extra={"session": sid, "error": describe(exc)}
            )

    async def claims(self, sid: str) -> list[dict]:
        raw = (await self.ctx.db.sync_state(sid)).get("rekey_claims")
        return list(dagcbor.decode(raw)) if raw else []

    async def publish(
        self,
        store: Store,
        sid: str,
        old_key: bytes,
        old_write: bytes,
        rev: int,
        members: list[dict],
        record: dict,
        carried: Sequence[dict] = (),
    ) -> None:
        """The notice, as revision rev+1 of the old members slot (with `carried`, the "c" of the slot holding it
        already: rekeycarried). That revision noted in `record` (`r`, kept) before the store is asked to take it: a
        resume finding the slot past it, holding another notice, knows its own was taken and written over since
        (Rekeyer.resume); taken, `record` notes it published (`p`, kept) at once."""
        salt, sealed = self.sealed(sid, old_key, members, record, carried)
        # noted for gc before its put, forgotten once the slot names it (SyncContext.put_to_name): killed in
        # between, the resumed rekey puts another (a new salt); refused as stale, the object is named by nothing.
        # The members object the slot named before, if this device put it, is let go once the notice is written
        entry = RegistryEntry.create(announce_key(old_write), rev + 1, b"\x1e" + digest(sealed) + salt)
        async with self.ctx.put_to_name(store, sid, sealed, entry.pk, entry.revision):
            crash_point("rekey:notice_put")  # (tests: the notice put, the slot not written)
            await pause_for_tests("rekey.notice_put")  # (the tests hold it here: put, the slot not written)
            if record.get("r") != entry.revision:
                record["r"] = entry.revision
                self.ctx.keys.set_rekey_pending(sid, dagcbor.encode(record))
            await bounded(store.set_head(entry), self.ctx.timeout)
            # published (every store of a mirror took it: sync/mirrorstrict.py): noted (`p`) before anything else,
            # as only `p` tells a resume on a mirror that it was (`r` does not there: Rekeyer.resume). Was: noted
            # by the caller after the slot named it for gc; killed in between, a dropped writer's notice over it
            # was taken for a rekey that came first on a mirror, and its pull took it
            if not record.get("p"):
                record["p"] = True
                self.ctx.keys.set_rekey_pending(sid, dagcbor.encode(record))
            crash_point("rekey:notice_set")  # (tests: the slot names the notice, still a gc candidate)
            await self.ctx.named(store, entry)

    @staticmethod
    def sealed(
        sid: str, old_key: bytes, members: list[dict], record: dict, carried: Sequence[dict] = ()
    ) -> tuple[bytes, bytes]:
        """The notice as the old slot's object: (its salt, it sealed); refused (members_full) past the cap."""
        obj = {**members_object(sid, members), "rekey": dagcbor.decode(record["n"])}
        plain = dagcbor.encode({**obj, "c": list(carried)} if carried else obj)
        salt = os.urandom(SALT_LEN)
        return salt, seal_members(sid, plain, members_key(old_key, salt), len(members), kept=len(record["m"]))

    async def named(self, store: Store, old_announce: bytes) -> None:
        """The object the old members slot names (this device's notice) is no longer a gc candidate, and the
        members object it named before, if this device put it, is let go (SyncContext.named)."""
        entry = await bounded(store.get_head(b"\xed" + old_announce), self.ctx.timeout)
        if entry is not None:
            await self.ctx.named(store, entry)
