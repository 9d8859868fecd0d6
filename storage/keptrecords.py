"""The signed IPNS records this device keeps to put again (table `kept_records`, sync/reput.py): per head
key, the best record it put or read on a store whose DHT forgets records, and when it last put it. The
bytes are opaque here: which of two records is better is the sync engine's to say."""

from __future__ import annotations

from collections.abc import Iterable

from .connections import Connections


class KeptRecords:
    def __init__(self, c: Connections):
        self.c = c

    async def all(self) -> dict[bytes, tuple[bytes, float]]:
        """Every record kept: head key -> (record, when this device last put it, Unix time; 0: never)."""
        rows = await self.c.committed.fetchall("SELECT pk, record, put_at FROM kept_records")
        return {bytes(r[0]): (bytes(r[1]), float(r[2])) for r in rows}

    async def keep(self, pk: bytes, record: bytes, put_at: float) -> None:
        """Keep `record` as the one of head `pk` (replacing the one kept), last put at `put_at`."""
        await self.c.write(
            "INSERT INTO kept_records(pk, record, put_at) VALUES (?,?,?)"
            " ON CONFLICT(pk) DO UPDATE SET record=excluded.record, put_at=excluded.put_at",
            (pk, record, put_at),
        )

    async def put_at(self, pk: bytes, record: bytes, when: float) -> None:
        """Note that the record kept for `pk` was put at `when`, if it is still `record`."""
        await self.c.write("UPDATE kept_records SET put_at=? WHERE pk=? AND record=?", (when, pk, record))

    async def drop(self, pks: Iterable[bytes]) -> None:
        """Forget the records of these heads (no session follows them any more)."""
        pks = list(pks)
        if not pks:
            return
        async with self.c.transaction() as tx:
            for pk in pks:
                await tx.execute("DELETE FROM kept_records WHERE pk=?", (pk,))
