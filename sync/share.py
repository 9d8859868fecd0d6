"""Sharing a session: making a share code for it.

Before a code is made, everything written so far is pushed (the code is of no use before that), the
session gets its announce key the first time it is shared, and a writer device adds itself to the
members slot (members.py). Importing a code is importer.py; following the other devices, follower.py.
`ImportError_` is re-exported here for the daemon, which imports it from this module.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable

from ..storage.clock import wall
from ..storage.errors import read_only, revoked, stopping
from ..storage.redact import shown_store
from ..storage.testhooks import pause_for_tests
from ..stores import StoreError
from ..stores.errors import StoreTimeout, failing
from .context import SyncContext
from .crypto import key_fingerprint
from .errors import ImportError_, crash_point, store_failed
from .locations import locations_of
from .members import Members, announce_key
from .rekey import Rekeyer
from .sharecode import ShareCode

# What `unshare` cannot undo, said in its answer, the CLI and the README alike.
CANNOT_TAKE_BACK = [
    "what the other devices already fetched stays with them, decrypted in their own databases: "
    "no rekey reaches into another device",
    "everything written before now stays readable to whoever holds an old code or key: its pages stay in "
    "the store under the old key (the new head still lists them); only what is written from now on is "
    "closed to them",
    "objects this device's logs no longer reference (old manifests) stay in the store until `sessiond gc` "
    "frees them, after its grace period",
]


def read_only_too(sid: str) -> str:
    """What an unshare of one device does to the read-only followers too, with the command that gives them back."""
    return (
        "every read-only follower loses access as well (a rekey ends every code issued before it): give those "
        f"you keep a new code with `sessiond share {shlex.quote(sid)}`"
    )


class Sharer:
    """Makes share codes. `sync_now` is the Syncer's: push `sid` now and wait (see engine.Syncer.sync_now);
    `last_failure`, why `sid`'s last push failed (engine.Syncer.last_failure)."""

    def __init__(
        self,
        ctx: SyncContext,
        members: Members,
        rekeyer: Rekeyer,
        sync_now: Callable[..., Awaitable[dict]],
        last_failure: Callable[[str], BaseException | None],
    ):
        self.ctx = ctx
        self.members = members
        self.rekeyer = rekeyer
        self.sync_now = sync_now
        self.last_failure = last_failure

    async def share(self, sid: str, *, write: bool, passphrase: str | None, expires_in: float | None) -> dict:
        ctx = self.ctx
        session = await ctx.db.get_session(sid)
        if session["access"] == "revoked":  # its code would name a key and a members slot the others left
            raise revoked(sid, "share it")
        if session["access"] == "read" and write:  # (a read-only code of it, this device can share)
            raise read_only(sid, "share it for writing, only read-only")
        if ctx.keys.rekey_pending(sid) is not None:
            # a rekey of it not finished here (on a mirror, one waiting on a store that is down: the pushes do not
            # wait): finished first, as a pull finishes it, or the share refused (`store`, naming the store). Was: a
            # code of the key that rekey replaces, revoked once it finished, its import meanwhile refused `revoked`
            async with ctx.rekey_lock(sid):
                await self.rekeyer.resume(sid)
        key = await ctx.keys.make_session_key(sid)  # a new one written off the event loop
        res = await self.sync_now(sid, wait=True, timeout=ctx.timeout)
        if not res["pushed"] and res.get("stopping"):
            raise stopping(f"session {sid} was not shared, no code made", f"`sessiond share {sid}` again")
        if not res["pushed"]:  # everything up to now is in the store (later changes follow as usual)
            said = res["sessions"].get(sid, {}).get("last_error") or "the store did not take the snapshot in time"
            err = ImportError_("store", f"cannot share {sid} before it is pushed: {said}")
            cause = self.last_failure(sid) or StoreTimeout(said)  # (its class: store_details)
            err.failure = (cause, (await ctx.store_for(sid)).url)
            raise err
        await pause_for_tests("share.pushed")  # (the tests delete the session here: a share racing its `rm`)
        remote = await ctx.db.remote(sid)
        new_slot = False
        if remote is None:  # first share of a session this device owns
            # under the lock `rm` deletes under (operations.delete): a session deleted since the push, its key files
            # with it, is refused here, not given a write secret that would stay on disk after it (add_remote's 404)
            async with ctx.lock(sid):
                await ctx.db.get_session(sid)  # (NotFound: deleted meanwhile)
                # a write secret made now: its members slot (signed by a key derived from it) cannot exist yet
                new_slot = ctx.keys.write_secret(sid) is None
                ws = await ctx.keys.make_write_secret(sid)
                crash_point("share:secret")
                await ctx.db.add_remote(sid, None, bytes(announce_key(ws).verify_key))
                crash_point("share:remote")
                ctx.shared.add(sid)
                remote = await ctx.db.remote(sid)
            assert remote is not None  # just added
        write_secret = ctx.keys.write_secret(sid)
        await pause_for_tests("share.member")  # (the tests delete the session here: `rm` between the locked steps)
        if write_secret is not None:
            # under the push lock: a push that comes now (pushes start at once) announces this device
            # too, and two announcements at once would leave the losing members object behind
            async with ctx.lock(sid):
                # (NotFound: deleted since the step above, under this lock, its write secret with it: said as the
                # session gone, not as this device holding no write secret of it, `conflict`)
                await ctx.db.get_session(sid)
                # a push may have announced this device before the lock came (Pusher.push): then it reads
                # the slot (as it wrote it: cached), lest a second members object be left in the store
                new_slot = new_slot and not (await ctx.db.remote(sid) or {}).get("announced")
                try:
                    await self.members.ensure_member(sid, slot=(0, [], []) if new_slot else None)
                except (TimeoutError, StoreError, OSError) as exc:
                    if not failing(exc):
                        raise
                    url = (await ctx.store_for(sid)).url  # a store failing to answer: the share's store error
                    raise store_failed(exc, url, f"cannot share {sid}") from None
        crash_point("share:member")
        # the key, the members slot and the write secret of one generation, read under the lock a switch to a new key
        # holds: the sync above took another device's rekey, or a pull meanwhile did (was: the key read before it and
        # the slot after, a code every import refused as `damaged`, its members list failing authentication)
        async with ctx.rekey_lock(sid):
            if (await ctx.db.get_session(sid))["access"] == "revoked":  # (that rekey left this device out)
                raise revoked(sid, "share it")
            now_key, remote = ctx.keys.session_key(sid), await ctx.db.remote(sid)
            write_secret = ctx.keys.write_secret(sid)
        assert now_key is not None and remote is not None  # (made above; a switch replaces them, never removes them)
        key = now_key
        store = await ctx.store_for(sid)
        expires_at = int(wall() + expires_in) if expires_in else None
        places = await locations_of(store)  # networks plus hints, not this device's store URLs as such
        code = ShareCode(
            sid, key, bytes(remote["announce_pk"]), None, write_secret if write else None, expires_at, tuple(places)
        )
        text = code.encode(passphrase)
        await ctx.db.share_log.add(
            sid,
            capability=code.capability,
            expires_at=expires_at,
            protected=passphrase is not None,
            store_url=store.url,
            key_fp=key_fingerprint(key),
        )
        return {
            "code": text,
            "session": sid,
            "capability": code.capability,
            "expires_at": expires_at,
            "store": shown_store(store.url),  # without credentials (storage/redact.py)
            "locations": [{"network": n, "hint": h} for n, h in places],
            "protected": passphrase is not None,
        }

    async def issued(self, sid: str | None) -> list[dict]:
        """The codes this device issued (of `sid`, or of every session), each with whether it still
        works: "revoked" once the session was rekeyed since (by any device), "expired" past its expiry."""
        ctx = self.ctx
        if sid is not None:
            await ctx.db.get_session(sid)
        t = wall()
        fps: dict[str, bytes | None] = {}
        out = []
        for r in await ctx.db.share_log.list(sid):
            s = r["session_id"]
            if s not in fps:
                key = ctx.keys.session_key(s)
                fps[s] = key_fingerprint(key) if key is not None else None
            status = (
                "revoked"
                if fps[s] != bytes(r["key_fp"])
                else "expired"
                if r["expires_at"] is not None and r["expires_at"] <= t
                else "active"
            )
            out.append(
                {
                    "id": r["id"],
                    "session": s,
                    "created_at": r["created_at"],
                    "capability": r["capability"],
                    "expires_at": r["expires_at"],
                    "protected": bool(r["protected"]),
                    "store": shown_store(r["store_url"]),
                    "status": status,
                }
            )
        return out

    async def unshare(self, sid: str, device: str | None) -> dict:
        """End access the one way that ends it: a rekey. With `device`, that writer device is left out
        (and, as with every rekey, each read-only follower); without, every other device is."""
        ctx = self.ctx
        if (await ctx.db.get_session(sid))["access"] == "read":  # (a rekey: its writers' to make)
            raise read_only(sid, "end access to it")
        if await ctx.db.remote(sid) is None:
            raise ImportError_("not_shared", f"session {sid} was never shared from this device: no access to end")
        active = sum(1 for s in await self.issued(sid) if s["status"] == "active")
        res = await self.rekeyer.rekey(sid, [device] if device else (), drop_all=device is None)
        # (none when the device was dropped before, nothing rekeyed again: a retry after a crash)
        active -= sum(1 for s in await self.issued(sid) if s["status"] == "active")
        notes = ([read_only_too(sid)] if device else []) + CANNOT_TAKE_BACK
        return {**res, "codes_revoked": active, "cannot_take_back": notes}


__all__ = ["CANNOT_TAKE_BACK", "ImportError_", "Sharer", "key_fingerprint"]
