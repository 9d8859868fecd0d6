"""The durable outbox of each mirror store (table `mirror_outbox`, sync/mirror.py): objects and heads a
store has not taken yet, in the order they were written. Rows are written before the mirror's write
returns, so what a store that is down missed survives a restart of the daemon."""

from __future__ import annotations

from .connections import Connections

OBJECT = "o"
HEAD = "h"


class Outbox:
    def __init__(self, c: Connections):
        self.c = c

    async def add_objects(self, url: str, items: list[tuple[bytes, bytes]]) -> None:
        """Queue objects (hash, bytes) for the store `url`; one already queued stays where it is."""
        if not items:
            return
        async with self.c.transaction() as tx:
            for h, data in items:
                await tx.execute(
                    "INSERT OR IGNORE INTO mirror_outbox(store_url, kind, key, data) VALUES (?,?,?,?)",
                    (url, OBJECT, h, data),
                )

    async def add_head(self, url: str, pk: bytes, entry: bytes, revision: int) -> None:
        """Queue a head for `url`, after everything queued so far. It replaces an older revision of the
        same head still waiting (only the newest matters); an equal or newer one waiting is kept."""
        async with self.c.transaction() as tx:
            row = await tx.fetchone(
                "SELECT rev FROM mirror_outbox WHERE store_url=? AND kind=? AND key=?", (url, HEAD, pk)
            )
            if row is not None:
                if row[0] >= revision:
                    return
                await tx.execute("DELETE FROM mirror_outbox WHERE store_url=? AND kind=? AND key=?", (url, HEAD, pk))
            await tx.execute(
                "INSERT INTO mirror_outbox(store_url, kind, key, data, rev) VALUES (?,?,?,?,?)",
                (url, HEAD, pk, entry, revision),
            )

    async def first(self, url: str, limit: int = 64) -> list[tuple[int, str, bytes, bytes]]:
        """The oldest `limit` rows waiting for `url`: (id, kind, key, data)."""
        rows = await self.c.committed.fetchall(
            "SELECT id, kind, key, data FROM mirror_outbox WHERE store_url=? ORDER BY id LIMIT ?", (url, limit)
        )
        return [(r[0], r[1], bytes(r[2]), bytes(r[3])) for r in rows]

    async def done(self, ids: list[int]) -> None:
        if not ids:
            return
        async with self.c.transaction() as tx:
            for i in ids:
                await tx.execute("DELETE FROM mirror_outbox WHERE id=?", (i,))

    async def move(self, old: str, new: str) -> int:
        """Give the rows waiting under the URL `old` to `new` (the same store, named as it is now), in
        their order; an object waiting under both stays once, and of a head the newest revision stays.
        Returns how many rows moved."""
        async with self.c.transaction() as tx:
            moved = await tx.execute("UPDATE OR IGNORE mirror_outbox SET store_url=? WHERE store_url=?", (new, old))
            # what is left under `old` is also waiting under `new`: an object, once is enough; a head,
            # the newer revision wins (its row's place in the order is the newer row's too)
            for key, rev, data in await tx.fetchall(
                "SELECT key, rev, data FROM mirror_outbox WHERE store_url=? AND kind=?", (old, HEAD)
            ):
                row = await tx.fetchone(
                    "SELECT rev FROM mirror_outbox WHERE store_url=? AND kind=? AND key=?", (new, HEAD, key)
                )
                if row is not None and row[0] < rev:
                    await tx.execute(
                        "UPDATE mirror_outbox SET data=?, rev=? WHERE store_url=? AND kind=? AND key=?",
                        (data, rev, new, HEAD, key),
                    )
            await tx.execute("DELETE FROM mirror_outbox WHERE store_url=?", (old,))
        return moved

    async def counts(self) -> dict[str, int]:
        """Rows waiting, per store URL."""
        rows = await self.c.committed.fetchall("SELECT store_url, count(*) FROM mirror_outbox GROUP BY store_url")
        return {r[0]: r[1] for r in rows}
