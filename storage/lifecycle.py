"""This device's own records of what it handed out and what it let go, never synced (schema 8):
the share codes it issued (`ShareLog`: described, never the code or its secrets) and the objects of its
logs that no current head references any more (`Released`: what `sessiond gc` may free), with those a push
is putting and has not yet recorded a revision naming (a push killed before it leaves them to gc)."""

from __future__ import annotations

from collections.abc import Iterable

from .connections import Connections
from .groupcommit import Transaction
from .model import now


class ShareLog:
    def __init__(self, c: Connections):
        self.c = c

    async def add(
        self,
        sid: str,
        *,
        capability: str,
        expires_at: int | None,
        protected: bool,
        store_url: str | None,
        key_fp: bytes,
    ) -> int:
        async with self.c.transaction() as tx:
            await tx.execute(
                "INSERT INTO shares (session_id, capability, created_at, expires_at, protected, store_url, key_fp)"
                " VALUES (?,?,?,?,?,?,?)",
                (sid, capability, now(), expires_at, int(protected), store_url, key_fp),
            )
            row = await tx.fetchone("SELECT max(id) AS id FROM shares WHERE session_id=?", (sid,))
        assert row is not None  # just inserted
        return int(row["id"])

    async def list(self, sid: str | None = None) -> list[dict]:
        sql = "SELECT id, session_id, capability, created_at, expires_at, protected, store_url, key_fp FROM shares"
        rows = await (
            self.c.committed.fetchall(sql + " WHERE session_id=? ORDER BY id", (sid,))
            if sid is not None
            else self.c.committed.fetchall(sql + " ORDER BY session_id, id")
        )
        return [dict(r) for r in rows]


def _released_rows(store_url: str, sid: str, hashes: Iterable[bytes], at: float | None) -> list[tuple]:
    t = now() if at is None else at
    return [(store_url, bytes(h), sid, t) for h in dict.fromkeys(hashes)]


async def _insert_released(tx: Transaction, rows: list[tuple]) -> None:
    await tx.executemany(
        "INSERT OR IGNORE INTO released (store_url, hash, session_id, released_at) VALUES (?,?,?,?)", rows
    )


class Released:
    def __init__(self, c: Connections):
        self.c = c

    async def add(self, store_url: str, sid: str, hashes: Iterable[bytes], at: float | None = None) -> None:
        """Record that this device's log of `sid` no longer references `hashes` (the first time counts)."""
        rows = _released_rows(store_url, sid, hashes, at)
        if rows:
            async with self.c.transaction() as tx:
                await _insert_released(tx, rows)

    @staticmethod
    async def add_in(tx: Transaction, store_url: str, sid: str, hashes: Iterable[bytes]) -> None:
        """add(), as part of the caller's transaction."""
        rows = _released_rows(store_url, sid, hashes, None)
        if rows:
            await _insert_released(tx, rows)

    async def due(self, before: float) -> list[dict]:
        """Every object released before `before`, oldest first."""
        rows = await self.c.committed.fetchall(
            "SELECT store_url, hash, session_id, released_at FROM released WHERE released_at<=?"
            " ORDER BY released_at, hash",
            (before,),
        )
        return [dict(r) for r in rows]

    async def count(self) -> int:
        row = await self.c.committed.fetchone("SELECT count(*) AS n FROM released")
        return int(row["n"]) if row else 0

    async def forget(self, store_url: str, hashes: Iterable[bytes]) -> None:
        """These are freed, or referenced again: no longer candidates."""
        hashes = list(hashes)
        if hashes:
            async with self.c.transaction() as tx:
                await self.forget_in(tx, store_url, hashes)

    @staticmethod
    async def forget_in(tx: Transaction, store_url: str, hashes: Iterable[bytes]) -> None:
        """forget(), as part of the caller's transaction."""
        rows = [(store_url, bytes(h)) for h in hashes]
        if rows:
            await tx.executemany("DELETE FROM released WHERE store_url=? AND hash=?", rows)
