"""Sharing a session: making a share code for it.

Before a code is made, everything written so far is pushed (the code is of no use before that), the
session gets its announce key the first time it is shared, and a writer device adds itself to the
members slot (members.py). Importing a code is importer.py; following the other devices, follower.py.
`ImportError_` is re-exported here for the daemon, which imports it from this module.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from .context import SyncContext
from .errors import ImportError_
from .locations import locations_of
from .members import Members, announce_key
from .mirror import mirror_urls
from .sharecode import ShareCode


class Sharer:
    """Makes share codes. `sync_now` is the Syncer's: push `sid` now and wait (see engine.Syncer.sync_now)."""

    def __init__(self, ctx: SyncContext, members: Members, sync_now: Callable[..., Awaitable[dict]]):
        self.ctx = ctx
        self.members = members
        self.sync_now = sync_now

    async def share(self, sid: str, *, write: bool, passphrase: str | None, expires_in: float | None) -> dict:
        ctx = self.ctx
        session = await ctx.db.get_session(sid)
        if session["access"] == "read" and write:
            raise ImportError_(
                "read_only",
                f"session {sid} was imported read-only here; it can only be shared read-only from this device",
            )
        key = ctx.keys.session_key(sid, create=True)
        res = await self.sync_now(sid, wait=True, timeout=ctx.timeout)
        if not res["pushed"]:  # everything up to now is in the store (later changes follow as usual)
            err = res["sessions"].get(sid, {}).get("last_error") or "the store did not take the snapshot in time"
            raise ImportError_("store", f"cannot share {sid} before it is pushed: {err}")
        remote = await ctx.db.remote(sid)
        if remote is None:  # first share of a session this device owns
            ws = ctx.keys.write_secret(sid, create=True)
            await ctx.db.add_remote(sid, None, bytes(announce_key(ws).verify_key))
            remote = await ctx.db.remote(sid)
            assert remote is not None  # just added
        write_secret = ctx.keys.write_secret(sid)
        if write_secret is not None:
            await self.members.ensure_member(sid)
        store = await ctx.store_for(sid)
        expires_at = int(time.time() + expires_in) if expires_in else None
        places = await locations_of(store)  # networks plus hints, not this device's store URLs as such
        code = ShareCode(
            sid, key, bytes(remote["announce_pk"]), None, write_secret if write else None, expires_at, tuple(places)
        )
        return {
            "code": code.encode(passphrase),
            "session": sid,
            "capability": code.capability,
            "expires_at": expires_at,
            "store": " ".join(mirror_urls(store.url)),
            "locations": [{"network": n, "hint": h} for n, h in places],
            "protected": passphrase is not None,
        }


__all__ = ["ImportError_", "Sharer"]
