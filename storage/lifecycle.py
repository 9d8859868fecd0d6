"""This device's own records of what it handed out and what it let go, never synced (schema 8):
the share codes it issued (`ShareLog`: described, never the code or its secrets) and the objects of its
logs that no current head references any more (`Released`: what `sessiond gc` may free, stamped with
clock.py's `steady()`, so that no step of the wall clock shortens gc's grace), with those a push
is putting and has not yet recorded a revision naming (a push killed before it leaves them to gc). And the
objects it put for a members slot to name (`slot_objects`, schema 24: Released.put_for_slot), let go once
the slot is seen written over (Released.slot_named)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from .clock import started, steady
from .connections import Connections
from .groupcommit import Transaction
from .model import now
from .unknown import no_session


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
            # (a session deleted since its share began: refused as its share would have been, not a foreign key's 500)
            if await tx.fetchone("SELECT 1 FROM sessions WHERE id=? AND NOT importing", (sid,)) is None:
                raise await no_session(tx, sid)
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
    t = steady() if at is None else at
    return [(store_url, bytes(h), sid, t) for h in dict.fromkeys(hashes)]


async def _insert_released(tx: Transaction, rows: list[tuple]) -> None:
    await tx.executemany(
        "INSERT OR IGNORE INTO released (store_url, hash, session_id, released_at) VALUES (?,?,?,?)", rows
    )


# the key prefix (table `meta`) of what a delete here kept in the store for good, by session (Released.kept_in_store)
KEPT_KEY = "gc.kept_in_store."


async def note_kept_in(tx: Transaction, sid: str, kept: dict) -> None:
    """What a delete of `sid` keeps in the store for good ({store, objects, why}; sync/gc.py kept_at_delete), noted
    in the delete's transaction, with when (`at`), for `sessiond gc` to name (in place of an earlier delete's)."""
    await tx.execute(
        "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (KEPT_KEY + sid, json.dumps({**kept, "at": now()}))
    )


class Released:
    def __init__(self, c: Connections):
        self.c = c

    async def kept_in_store(self) -> list[dict]:
        """What deletes here kept in the store for good (note_kept_in), by session: [{session, store, objects, why,
        at}], in the order of the sessions' ids."""
        rows = await self.c.committed.fetchall(
            "SELECT key, value FROM meta WHERE key>=? AND key<? ORDER BY key", (KEPT_KEY, KEPT_KEY[:-1] + "/")
        )
        return [{"session": r["key"][len(KEPT_KEY) :], **json.loads(r["value"])} for r in rows]

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

    async def put_for_slot(self, store_url: str, sid: str, h: bytes, slot_pk: bytes, rev: int) -> None:
        """`h` is about to be put for the members slot `slot_pk` (0xed | announce key) to name at revision
        `rev`: a gc candidate until the slot names it (forgotten by slot_named), and this device's object
        of that slot until the slot is seen written over (then a candidate again: slot_named)."""
        async with self.c.transaction() as tx:
            await _insert_released(tx, _released_rows(store_url, sid, [h], None))
            await tx.execute(
                "INSERT OR IGNORE INTO slot_objects (store_url, hash, session_id, slot_pk, rev) VALUES (?,?,?,?,?)",
                (store_url, bytes(h), sid, bytes(slot_pk), rev),
            )

    async def slot_named(self, store_url: str, slot_pk: bytes, rev: int, h: bytes, *, written: bool) -> int:
        """The members slot `slot_pk` holds revision `rev`, naming `h` (`written`: by this device just now, or
        read by it just now to learn so; else read from the store, perhaps a moment ago): `h` is no longer a
        gc candidate, and every object this device put for that slot at `rev` or before that it does not
        name is let go (a candidate from now: slot revisions only rise, and an object is named at the one
        revision it was put for, or never). A read that is not `written` forgets only an object this device
        holds as the slot's (one let go since the read stays let go). How many were let go. Reads first: a
        slot whose objects are all known to it writes nothing."""
        slot_pk, h = bytes(slot_pk), bytes(h)
        q = self.c.committed
        over = await q.fetchall(
            "SELECT hash FROM slot_objects WHERE store_url=? AND slot_pk=? AND rev<=? AND hash!=?",
            (store_url, slot_pk, rev, h),
        )
        noted = await q.fetchone("SELECT 1 FROM released WHERE store_url=? AND hash=?", (store_url, h))
        if not over and noted is None:
            return 0
        ours = "" if written else " AND hash IN (SELECT hash FROM slot_objects WHERE store_url=?1 AND hash=?2)"
        async with self.c.transaction() as tx:
            await tx.execute(f"DELETE FROM released WHERE store_url=?1 AND hash=?2{ours}", (store_url, h))
            rows = await tx.fetchall(
                "SELECT hash, session_id FROM slot_objects WHERE store_url=? AND slot_pk=? AND rev<=? AND hash!=?",
                (store_url, slot_pk, rev, h),
            )
            t = steady()
            await _insert_released(tx, [(store_url, bytes(r[0]), r[1], t) for r in rows])
            await tx.execute(
                "DELETE FROM slot_objects WHERE store_url=? AND slot_pk=? AND rev<=? AND hash!=?",
                (store_url, slot_pk, rev, h),
            )
        return len(rows)

    async def slot_lets_go(self, store_url: str, slot_pk: bytes, rev: int, h: bytes) -> tuple[list[dict], bool]:
        """What slot_named(store_url, slot_pk, rev, h, written=False) would change, changing nothing (a dry run of
        gc): the objects it would let go that are no candidates yet, as due() gives one (released now), and
        whether `h`, a candidate, would stop being one."""
        slot_pk, h = bytes(slot_pk), bytes(h)
        q = self.c.committed
        rows = await q.fetchall(
            "SELECT hash, session_id FROM slot_objects WHERE store_url=?1 AND slot_pk=?2 AND rev<=?3 AND hash!=?4"
            " AND hash NOT IN (SELECT hash FROM released WHERE store_url=?1)",
            (store_url, slot_pk, rev, h),
        )
        t = steady()
        lets_go = [{"store_url": store_url, "hash": bytes(r[0]), "session_id": r[1], "released_at": t} for r in rows]
        forgets = await q.fetchone(
            "SELECT 1 FROM released WHERE store_url=?1 AND hash=?2"
            " AND hash IN (SELECT hash FROM slot_objects WHERE store_url=?1 AND hash=?2)",
            (store_url, h),
        )
        return lets_go, forgets is not None

    async def orphan_slots(self, gone_before: float | None = None) -> list[tuple[str, bytes, list[str]]]:
        """The members slots (store, 0xed | announce key, and the sessions it put them for) this device put objects
        for in sessions deleted here since: nothing here reads them any more but gc (sync/gc.py), which lets go
        what they no longer name. `gone_before` (a `steady()` time): those read as gone (slot_read_gone) since
        left out; one read so by an earlier run after this start's wall clock (stepped back since) as if at the
        start, so that no step of the wall clock holds the next read for as long as the step."""
        rows = await self.c.committed.fetchall(
            "SELECT DISTINCT store_url, slot_pk, session_id FROM slot_objects"
            " WHERE session_id NOT IN (SELECT id FROM sessions)"
            " AND (gone_at IS NULL OR ?1 IS NULL OR min(gone_at, ?2)<=?1)"
            " ORDER BY store_url, slot_pk, session_id",
            (gone_before, started()),
        )
        out: dict[tuple[str, bytes], list[str]] = {}
        for r in rows:
            out.setdefault((r[0], bytes(r[1])), []).append(r[2])
        return [(url, pk, sids) for (url, pk), sids in out.items()]

    async def slot_settled(self, store_url: str, slot_pk: bytes) -> None:
        """The members slot `slot_pk` of a session deleted here, read by gc (what it no longer names let go: slot_named)
        or found gone: its records dropped, so that no gc reads it again (nothing here writes it any more). What it
        names stays in the store, no candidate; an object put for a revision it never reached stays a candidate."""
        async with self.c.transaction() as tx:
            await tx.execute(
                "DELETE FROM slot_objects WHERE store_url=? AND slot_pk=?"
                " AND session_id NOT IN (SELECT id FROM sessions)",
                (store_url, bytes(slot_pk)),
            )

    async def slot_objects_of(self, store_url: str, slot_pk: bytes) -> list[bytes]:
        """The objects this device put for the members slot `slot_pk` in sessions deleted here (orphan_slots)."""
        rows = await self.c.committed.fetchall(
            "SELECT DISTINCT hash FROM slot_objects WHERE store_url=? AND slot_pk=?"
            " AND session_id NOT IN (SELECT id FROM sessions) ORDER BY hash",
            (store_url, bytes(slot_pk)),
        )
        return [bytes(r[0]) for r in rows]

    async def slot_gone(self, store_url: str, slot_pk: bytes) -> None:
        """The members slot `slot_pk` of a session deleted here is gone from a store whose heads do not expire:
        nothing names what this device put for it, each a candidate from now (freed after the grace), its records
        dropped with it (no gc reads the slot again)."""
        async with self.c.transaction() as tx:
            rows = await tx.fetchall(
                "SELECT hash, session_id FROM slot_objects WHERE store_url=? AND slot_pk=?"
                " AND session_id NOT IN (SELECT id FROM sessions)",
                (store_url, bytes(slot_pk)),
            )
            t = steady()
            await _insert_released(tx, [(store_url, bytes(r[0]), r[1], t) for r in rows])
            await tx.execute(
                "DELETE FROM slot_objects WHERE store_url=? AND slot_pk=?"
                " AND session_id NOT IN (SELECT id FROM sessions)",
                (store_url, bytes(slot_pk)),
            )

    async def slot_read_gone(self, store_url: str, slot_pk: bytes, absent: Iterable[bytes]) -> None:
        """The members slot `slot_pk` of a session deleted here read as gone from a store whose heads expire, some of
        what this device put for it still there: its rows stamped with the time (`steady()`: orphan_slots leaves it
        out until gc's interval has passed, which no step of the wall clock lengthens), those of `absent` (no
        longer in the store) dropped, in one transaction."""
        async with self.c.transaction() as tx:
            rows = [(store_url, bytes(h)) for h in absent]
            await tx.executemany("DELETE FROM released WHERE store_url=? AND hash=?", rows)
            await tx.executemany("DELETE FROM slot_objects WHERE store_url=? AND hash=?", rows)
            await tx.execute(
                "UPDATE slot_objects SET gone_at=? WHERE store_url=? AND slot_pk=?"
                " AND session_id NOT IN (SELECT id FROM sessions)",
                (steady(), store_url, bytes(slot_pk)),
            )

    async def freed(self, store_url: str, hashes: Iterable[bytes]) -> None:
        """These are freed (or not held by the store at all): no longer candidates, nor slot objects."""
        rows = [(store_url, bytes(h)) for h in hashes]
        if rows:
            async with self.c.transaction() as tx:
                await tx.executemany("DELETE FROM released WHERE store_url=? AND hash=?", rows)
                await tx.executemany("DELETE FROM slot_objects WHERE store_url=? AND hash=?", rows)

    async def due(self, before: float) -> list[dict]:
        """Every object released before `before`, oldest first."""
        rows = await self.c.committed.fetchall(
            "SELECT store_url, hash, session_id, released_at FROM released WHERE released_at<=?"
            " ORDER BY released_at, hash",
            (before,),
        )
        return [dict(r) for r in rows]

    async def still(self, store_url: str, hashes: Iterable[bytes]) -> set[bytes]:
        """Which of `hashes` are candidates in `store_url` now (one named since it was listed is not)."""
        hashes = [bytes(h) for h in hashes]
        out: set[bytes] = set()
        for i in range(0, len(hashes), 500):  # (SQLite's bound on a statement's variables)
            part = hashes[i : i + 500]
            rows = await self.c.committed.fetchall(
                f"SELECT hash FROM released WHERE store_url=? AND hash IN ({','.join('?' * len(part))})",
                (store_url, *part),
            )
            out.update(bytes(r["hash"]) for r in rows)
        return out

    async def of_session(self, sid: str) -> list[bytes]:
        """The candidates of `sid`'s logs (a delete's: what it keeps in the store, sync/gc.py kept_at_delete)."""
        rows = await self.c.committed.fetchall("SELECT hash FROM released WHERE session_id=?", (sid,))
        return [bytes(r["hash"]) for r in rows]

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
