"""Where `verify` or a pull has seen other devices' logs (table `logs_seen`, migration 30): by session, each store of a
mirror verify found holding a log whole, or a pull's read of its head through the mirror found holding the head as
read (sync/follower.py: no read of its own), by the log's head key. A store of the mirror that holds none of a log
another store holds whole was never sent it (its writer pushes to the stores it names: a note) unless it was seen
holding it before: then it lost it (sync/verify.py). A session's rows go with it; this device's only, never synced."""

from __future__ import annotations

from collections.abc import Iterable

from .connections import Connections


class LogsSeen:
    def __init__(self, c: Connections):
        self.c = c

    async def seen(self, sid: str, store_url: str, pks: Iterable[bytes]) -> None:
        """`store_url` holds the logs of head keys `pks` of `sid` whole (read first: no write for those noted)."""
        new = [pk for pk in pks if not await self.was_seen(sid, store_url, [pk])]
        if not new:
            return
        async with self.c.transaction() as tx:
            for pk in new:
                await tx.execute(
                    "INSERT OR IGNORE INTO logs_seen(session_id, store_url, head_pk)"
                    " SELECT id, ?, ? FROM sessions WHERE id=?",
                    (store_url, pk, sid),
                )

    async def was_seen(self, sid: str, store_url: str, pks: Iterable[bytes]) -> bool:
        """Whether `store_url` was seen holding the log of any of head keys `pks` of `sid`."""
        for pk in pks:
            row = await self.c.committed.fetchone(
                "SELECT 1 FROM logs_seen WHERE session_id=? AND store_url=? AND head_pk=?", (sid, store_url, pk)
            )
            if row is not None:
                return True
        return False
