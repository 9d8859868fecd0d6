"""A store found serving this device's own head of a session forged, damaged or rolled back (table `head_lies`,
sync/verify.py): by session, the store, how (`forged` or `rolled back`), the revision this device had pushed when
a verify found it so, and whether a `sessiond sync` of the session ran since (its fix). Kept in the database, not the
daemon's memory: a verify after a restart still knows the first finding, and says the store lies once it serves the
head so again after that sync (or a push past that revision)."""

from __future__ import annotations

import json
from typing import Any

from .connections import Connections


class HeadLies:
    def __init__(self, c: Connections):
        self.c = c

    async def found(self, sid: str) -> dict | None:
        """The finding noted for `sid` ({store_url, how, head_rev, synced}), or None."""
        row = await self.c.committed.fetchone(
            "SELECT store_url, how, head_rev, synced FROM head_lies WHERE session_id=?", (sid,)
        )
        return dict(row) if row is not None else None

    async def note(self, sid: str, store_url: str, how: str, head_rev: int) -> None:
        """A verify found `sid`'s head served so (`how`) by `store_url`, this device having pushed revision
        `head_rev`: noted in place of any earlier finding (nothing, for a session deleted meanwhile)."""
        async with self.c.transaction() as tx:
            await tx.execute(
                "INSERT OR REPLACE INTO head_lies(session_id, store_url, how, head_rev)"
                " SELECT id, ?, ?, ? FROM sessions WHERE id=?",
                (store_url, how, head_rev, sid),
            )

    async def synced(self, sid: str | None) -> None:
        """A `sessiond sync` of `sid` (None: of every session) began: the findings noted before it are followed by
        their fix (read first: no write when there is none to mark)."""
        where, args = ("synced=0", ()) if sid is None else ("synced=0 AND session_id=?", (sid,))
        if await self.c.committed.fetchone(f"SELECT 1 FROM head_lies WHERE {where} LIMIT 1", args) is None:
            return
        async with self.c.transaction() as tx:
            await tx.execute(f"UPDATE head_lies SET synced=1 WHERE {where}", args)

    async def clear(self, sid: str) -> None:
        """A verify found `sid`'s head whole: any finding forgotten (read first: no write when there is none)."""
        if await self.found(sid) is not None:
            async with self.c.transaction() as tx:
                await tx.execute("DELETE FROM head_lies WHERE session_id=?", (sid,))


# the key prefix (table `meta`) of a head a sync's repair found served rolled back or forged, by session (HeadMends)
MEND_KEY = "sync.head_mend."


async def drop_mend(tx: Any, sid: str) -> None:
    """In a session's delete transaction: its HeadMends row (`meta` holds no reference to the session: kept, a session
    taken in again under its id, from a file or a code, came back with the deleted one's finding)."""
    await tx.execute("DELETE FROM meta WHERE key=?", (MEND_KEY + sid,))


class HeadMends:
    """A head of this device's a sync's repair found its store serving rolled back or forged (sync/lostlog.py), by
    session: {store, how, published, served} as doctor says it, `again`: whether a push is still to publish the
    head anew over the objects the store holds (head_only), and `deferred` while the checks since left a store
    unchecked (sync/lostlog.py: doctor says so, after a restart too). Kept in `meta` (no migration: a few rows at
    most), not the daemon's memory alone: a daemon started again after a kill between the finding and that push
    publishes the head still, and doctor still warns, until a sync's check finds the store holding the log whole.
    The row of a session deleted since is dropped when they are read (at the start)."""

    def __init__(self, c: Connections):
        self.c = c

    async def note(self, sid: str, mend: dict) -> None:
        async with self.c.transaction() as tx:
            await tx.execute(
                "INSERT OR REPLACE INTO meta(key, value) SELECT ?, ? FROM sessions WHERE id=?",
                (MEND_KEY + sid, json.dumps(mend, separators=(",", ":")), sid),
            )

    async def clear(self, sid: str) -> None:
        async with self.c.transaction() as tx:
            await tx.execute("DELETE FROM meta WHERE key=?", (MEND_KEY + sid,))

    async def all(self) -> dict[str, dict]:
        """Every session's, by session (those of sessions gone: dropped)."""
        end = MEND_KEY[:-1] + "/"  # ('/' follows '.': every key with the prefix sorts below it)
        rows = await self.c.committed.fetchall("SELECT key, value FROM meta WHERE key>=? AND key<?", (MEND_KEY, end))
        out = {r["key"][len(MEND_KEY) :]: json.loads(r["value"]) for r in rows}
        if out:
            ids = await self.c.committed.fetchall(
                f"SELECT id FROM sessions WHERE id IN ({','.join('?' * len(out))})", tuple(out)
            )
            kept = {r["id"] for r in ids}
            for sid in set(out) - kept:
                await self.clear(sid)
                del out[sid]
        return out
