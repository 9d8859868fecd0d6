"""Where this device's walks down an author's older manifests stopped (table `claims_walks`, migration 32): by session
and walk (a digest of the store, the author's head key, the claim looked for, not the keys it opens under, which
change while the notice stands: sync/rekeywalk.py), the walk's cuts, as that module encodes them. A pull's walk is
bounded to a few seconds, and one cut short goes on at the next pull, after a restart too: kept in memory only, a
restart walked again from the start (on a slow store with many manifests, minutes of slices at every start). Each
write is one statement, so one transaction: a walk's cuts are the old ones or the new ones, never half. A walk that
found the claim (cut short before or not) keeps that in place of its cuts until the session goes over to another key
(the notice taken, or a new code imported: SyncState.switch_slot, applyremote's rejoin); one that ended finding none
keeps that, or where it ended (a manifest it could not read), so that a walk from the author's head moved since goes
on there; one left behind (another notice, a generation left: `keep_only`) drops its row; a session's rows go with
it. A walk that did not find the claim writes its row only if no other walk (a `verify` beside a pull) found it
meanwhile (`put_unless`, read and written in one transaction): the found row wins. This device's only, never synced."""

from __future__ import annotations

from collections.abc import Callable

from .connections import Connections

# (nothing, if the session is gone)
_PUT = "INSERT OR REPLACE INTO claims_walks(session_id, walk, cuts) SELECT id, ?, ? FROM sessions WHERE id=?"


class ClaimsWalks:
    def __init__(self, c: Connections):
        self.c = c

    async def get(self, sid: str, walk: bytes) -> bytes | None:
        """The cuts kept for `walk` of `sid` (None: none, the walk not cut short or done)."""
        row = await self.c.committed.fetchone(
            "SELECT cuts FROM claims_walks WHERE session_id=? AND walk=?", (sid, walk)
        )
        return bytes(row[0]) if row is not None else None

    async def put(self, sid: str, walk: bytes, cuts: bytes) -> None:
        """`cuts` kept for `walk` of `sid`, in place of any before (nothing, if the session is gone)."""
        async with self.c.transaction() as tx:
            await tx.execute(_PUT, (walk, cuts, sid))

    async def put_unless(self, sid: str, walk: bytes, cuts: bytes | None, stands: Callable[[bytes], bool]) -> bool:
        """`cuts` kept for `walk` of `sid` (None: its row dropped), unless the row there now is one `stands` says
        wins (another walk's, written while this one read the store: a `verify` beside a pull), read in the same
        transaction: that row then stands unchanged (False)."""
        async with self.c.transaction() as tx:
            row = await tx.fetchone("SELECT cuts FROM claims_walks WHERE session_id=? AND walk=?", (sid, walk))
            if row is not None and stands(bytes(row[0])):
                return False
            if cuts is None:
                await tx.execute("DELETE FROM claims_walks WHERE session_id=? AND walk=?", (sid, walk))
            else:
                await tx.execute(_PUT, (walk, cuts, sid))
        return True

    async def keep_only(self, sid: str, walks: set[bytes]) -> None:
        """The cuts of `sid`'s walks but `walks` dropped: walks left behind (rekeywalk._left_behind). Read first, so
        that a pull's walk writes nothing when there are none (the usual case)."""
        rows = await self.c.committed.fetchall("SELECT walk FROM claims_walks WHERE session_id=?", (sid,))
        stale = [bytes(r[0]) for r in rows if bytes(r[0]) not in walks]
        if stale:
            async with self.c.transaction() as tx:
                for walk in stale:
                    await tx.execute("DELETE FROM claims_walks WHERE session_id=? AND walk=?", (sid, walk))

    async def drop(self, sid: str, walk: bytes) -> None:
        """`walk` of `sid` done finding no claim (or its head unread): its cuts dropped."""
        async with self.c.transaction() as tx:
            await tx.execute("DELETE FROM claims_walks WHERE session_id=? AND walk=?", (sid, walk))
