"""The signed IPNS records this device keeps to put again (table `kept_records`, sync/reput.py): per head
key, the best record it put or read on a store whose DHT forgets records, and when it last put it. The
bytes are opaque here: which of two records is better is the sync engine's to say."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .connections import Connections


async def drop_session_records(tx: Any, sid: str, own_head_pk: bytes | None) -> None:
    """In a session's delete transaction (before its rows go): forget the records of the heads it follows,
    its members slot's and its peers' (from its rows) and this device's own (`own_head_pk`: derived from
    the device key, which the database does not hold). Each is the session's alone (the keys derive from
    its id), so no other session loses one; a record a store hands after the delete is dropped by the
    record keeper's next round (sync/reput.py)."""
    pks = [bytes(r[0]) for r in await tx.fetchall("SELECT head_pk FROM peers WHERE session_id=?", (sid,))]
    slot = await tx.fetchone("SELECT announce_pk FROM remotes WHERE session_id=?", (sid,))
    if slot is not None:
        pks.append(b"\xed" + bytes(slot[0]))  # stored without the key type; the record's key has it
    if own_head_pk is not None:
        pks.append(own_head_pk)
    await tx.executemany("DELETE FROM kept_records WHERE pk=?", [(pk,) for pk in pks])


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
