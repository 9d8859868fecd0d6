"""Push and pull bookkeeping: how far this device's log is pushed (sync_state), where a shared session
syncs (remotes), whom it follows and how far each is applied (peers), this device's id, and the repair
of unpushed operations no snapshot can hold.

The sync engine's reads of its own bookkeeping use Connections.latest (see the read rule in
storage/database.py): they wait for a transaction under way and see its end."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from .claimswalks import ClaimsWalks
from .connections import Connections
from .errors import Conflict
from .groupcommit import Transaction
from .headlies import HeadLies, HeadMends
from .logsseen import LogsSeen
from .model import JSON_FIELDS, SESSION_TEXTS, dumps, message_id
from .sessions import session_row

_INT_LIMITS = (-(1 << 64), (1 << 64) - 1)  # what DAG-CBOR can encode (sync/dagcbor.py)
_STORE_MOVE = "store.move"  # in `meta`: a move of the daemon's store under way (note_store_move)


def pushable(v: Any) -> tuple[Any, bool]:
    """`v` with what DAG-CBOR cannot encode replaced (an integer beyond 64 bits by its decimal text,
    NaN and Infinity by null), and whether anything was."""
    if isinstance(v, dict):
        out, changed = {}, False
        for k, x in v.items():
            out[k], c = pushable(x)
            changed |= c
        return out, changed
    if isinstance(v, list):
        pairs = [pushable(x) for x in v]
        return [x for x, _ in pairs], any(c for _, c in pairs)
    if isinstance(v, float) and not math.isfinite(v):
        return None, True
    if isinstance(v, int) and not isinstance(v, bool) and not _INT_LIMITS[0] <= v <= _INT_LIMITS[1]:
        return str(v), True
    return v, False


class SyncState:
    def __init__(self, c: Connections):
        self.c = c
        self.head_lies = HeadLies(c)  # a store found serving this device's head forged or rolled back (verify)
        self.head_mends = HeadMends(c)  # ... (a sync's repair), and whether its head is still to be published again
        self.logs_seen = LogsSeen(c)  # the stores of a mirror verify found holding another device's log whole
        self.claims_walks = ClaimsWalks(c)  # where a pull's walk of an author's older manifests stopped

    # ------------------------------------------------------------------ this device's log
    async def last_seq(self, sid: str, device_id: str | None = None) -> int:
        rows = await self.c.latest(
            "SELECT last_seq FROM logs WHERE session_id=? AND device_id=?", (sid, device_id or self.c.device_id)
        )
        return rows[0][0] if rows else 0

    async def written_after(self, sid: str, seq: int, shown: int = 5) -> tuple[list[str], int, int]:
        """What this device wrote to `sid` after its log's `seq`: the ids of its first `shown` messages, how
        many messages, and how many other changes (what a rekey that carried its log over up to `seq` only
        left here: rekey.py). (A message is a row of `messages`, not of `ops`, which holds the other changes.)"""
        me = self.c.device_id
        ops = await self.c.committed.fetchone(
            "SELECT count(*) FROM ops WHERE session_id=? AND device_id=? AND seq>?", (sid, me, seq)
        )
        count = await self.c.committed.fetchone(
            "SELECT count(*) FROM messages WHERE session_id=? AND device_id=? AND seq>?", (sid, me, seq)
        )
        rows = await self.c.committed.fetchall(
            "SELECT seq FROM messages WHERE session_id=? AND device_id=? AND seq>? ORDER BY seq LIMIT ?",
            (sid, me, seq, shown),
        )
        return [message_id(me, r[0]) for r in rows], count[0] if count else 0, ops[0] if ops is not None else 0

    async def held_here(self, sid: str) -> dict | None:
        """What this device wrote to `sid`, a session a rekey left it out of, that the rekey did not carry over
        (past the seq its revocation kept, storage/statuschanges.py mark_revoked): held here only, on no other
        device. {messages, changes (other than messages), known (False: the rekey did not say how far it read
        this device's log, and everything this device wrote is counted)}; None if nothing (or not revoked)."""
        row = await self.c.committed.fetchone("SELECT carried FROM revocations WHERE session_id=?", (sid,))
        return None if row is None else await self._held(sid, row[0])

    async def revocation(self, sid: str) -> tuple[bool, int | None]:
        """Whether a rekey left this device out of `sid` (its mark kept), and how far it carried this device's
        log over (the seq its revocation kept; None: the rekey did not say)."""
        row = await self.c.committed.fetchone("SELECT carried FROM revocations WHERE session_id=?", (sid,))
        return (False, None) if row is None else (True, row[0])

    async def all_held_here(self) -> dict[str, dict]:
        """held_here of every session that holds anything here only, by id (`doctor`)."""
        out = {}
        for sid, carried in await self.c.committed.fetchall("SELECT session_id, carried FROM revocations"):
            if (held := await self._held(sid, carried)) is not None:
                out[sid] = held
        return out

    async def _held(self, sid: str, carried: int | None) -> dict | None:
        _, messages, other = await self.written_after(sid, carried or 0, shown=0)
        if not messages and not other:
            return None
        return {"messages": messages, "changes": other, "known": carried is not None}

    async def get_lamport(self, sid: str) -> int:
        return (await session_row(self.c.committed, sid))["lamport"]

    async def devices(self, sid: str) -> dict[str, int]:
        return {
            r[0]: r[1]
            for r in await self.c.committed.fetchall("SELECT device_id, last_seq FROM logs WHERE session_id=?", (sid,))
        }

    async def note(self, key: str) -> str | None:
        """A note the sync engine keeps in `meta` (as `sync.<key>`), or None."""
        rows = await self.c.latest("SELECT value FROM meta WHERE key=?", ("sync." + key,))
        return rows[0][0] if rows else None

    async def set_note(self, key: str, value: str) -> None:
        async with self.c.transaction() as tx:
            await tx.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", ("sync." + key, value))

    async def adopt_device_id(self, device_id: str) -> None:
        """Become `device_id` (a device key restored into a fresh home finds its earlier logs published
        under that id). Refused once this home has written anything of its own under its current id."""
        if device_id == self.c.device_id:
            return
        async with self.c.transaction() as tx:
            if await tx.fetchone("SELECT 1 FROM logs WHERE device_id=? LIMIT 1", (self.c.device_id,)) is not None:
                raise Conflict(
                    f"this home is device {self.c.device_id} and has written sessions as that device",
                    reason="other_device",
                )
            await tx.execute("UPDATE meta SET value=? WHERE key='device_id'", (device_id,))
        self.c.device_id = device_id

    async def repair_unpushable(self) -> list[str]:
        """Make this device's unpushed operations pushable again, and return the sessions changed.

        Before the API held values to what DAG-CBOR can encode, a session could take an integer
        beyond 64 bits (or a NaN) and then fail every push for ever. Such an operation was never
        pushed, so no other device has it, and it may still be rewritten: the integer becomes its
        decimal text, the NaN or Infinity null, in the operation and in what it materialised. The
        session's owner can then replace the value (`sessiond set --metadata ...`)."""
        pushed = "coalesce((SELECT pushed_seq FROM sync_state y WHERE y.session_id=t.session_id), 0)"
        digits = "[0-9]" * 20
        async with self.c.transaction() as tx:
            found: dict[str, list] = {}
            for table, col in (("ops", "body"), ("messages", "extra")):
                for sid, seq, text in await tx.fetchall(
                    f"SELECT session_id, seq, {col} FROM {table} t WHERE device_id=? AND {col} IS NOT NULL"
                    f" AND seq > {pushed} AND ({col} GLOB '*{digits}*' OR {col} GLOB '*NaN*'"
                    f" OR {col} GLOB '*Infinity*')",
                    (self.c.device_id,),
                ):
                    fixed, changed = pushable(json.loads(text))
                    if changed:
                        found.setdefault(sid, []).append((table, col, seq, dumps(fixed)))
            for sid, fixes in found.items():
                for table, col, seq, text in fixes:
                    await tx.execute(
                        f"UPDATE {table} SET {col}=? WHERE session_id=? AND device_id=? AND seq=?",
                        (text, sid, self.c.device_id, seq),
                    )
                for table, cols, key, ident in (  # (the texts beside the session's row: migration 21)
                    ("sessions", tuple(k for k in JSON_FIELDS if k not in SESSION_TEXTS), "id", "id"),
                    ("session_texts", tuple(k for k in JSON_FIELDS if k in SESSION_TEXTS), "session_id", "session_id"),
                    ("chats", ("settings", "policy"), "session_id", "id"),
                ):
                    sql = f"SELECT {ident}, {', '.join(cols)} FROM {table} WHERE {key}=?"
                    for row in await tx.fetchall(sql, (sid,)):
                        for k, text in zip(cols, row[1:]):
                            fixed, changed = pushable(json.loads(text)) if text else (None, False)
                            if changed:
                                await tx.execute(
                                    f"UPDATE {table} SET {k}=? WHERE {key}=? AND {ident}=?", (dumps(fixed), sid, row[0])
                                )
        return sorted(found)

    # ------------------------------------------------------------------ push state
    async def signed_sessions(self) -> int:
        """How many sessions have a head this device signed in a store (pushed at least once): what a new
        device key would fork."""
        row = await self.c.committed.fetchone("SELECT count(*) FROM sync_state WHERE head_rev > 0 OR pushed_seq > 0")
        return int(row[0]) if row else 0

    async def sync_state(self, sid: str) -> dict:
        rows = await self.c.latest("SELECT * FROM sync_state WHERE session_id=?", (sid,))
        if not rows:
            return {
                "pushed_seq": 0,
                "head_rev": 0,
                "tree": None,
                "pending": None,
                "last_error": None,
                "last_push": None,
                "rekey_claims": None,
                "head_manifest": None,
                "head_announce": None,
            }
        return dict(rows[0])

    async def all_sync_states(self, sids: Sequence[str] | None = None) -> dict[str, dict]:
        """The push state of every session, or of `sids` only (a read of those rows, not of all: a share or a
        `sync --wait` of one session asks this on every push of any session while it waits)."""
        where, args = _only(sids, "s.id")
        rows = await self.c.committed.fetchall(
            "SELECT s.id AS session_id, coalesce(l.last_seq, 0) AS last_seq, coalesce(y.pushed_seq, 0) AS pushed_seq,"
            " coalesce(y.head_rev, 0) AS head_rev, y.last_error AS last_error, y.last_push AS last_push"
            " FROM sessions s LEFT JOIN logs l ON l.session_id=s.id AND l.device_id=?"
            f" LEFT JOIN sync_state y ON y.session_id=s.id WHERE NOT s.importing{where} ORDER BY s.id",
            (self.c.device_id, *args),
        )
        return {
            r["session_id"]: {
                "pending": r["last_seq"] - r["pushed_seq"],
                "pushed_seq": r["pushed_seq"],
                "last_seq": r["last_seq"],
                "head_rev": r["head_rev"],
                "last_error": r["last_error"],
                "last_push": r["last_push"],
            }
            for r in rows
        }

    async def save_sync_state(self, sid: str, **fields) -> None:
        async with self.c.transaction() as tx:
            await self.save_sync_state_in(tx, sid, **fields)

    @staticmethod
    async def save_sync_state_in(tx: Transaction, sid: str, **fields) -> None:
        """save_sync_state(), as part of the caller's transaction."""
        cols = ", ".join(f"{k}=excluded.{k}" for k in fields)
        names = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        await tx.execute(
            f"INSERT INTO sync_state(session_id, {names}) VALUES (?, {marks}) "
            f"ON CONFLICT(session_id) DO UPDATE SET {cols}",
            (sid, *fields.values()),
        )

    async def sessions_needing_push(self) -> list[str]:
        """The sessions a push must be resumed for after a restart: this device's log not all pushed, or
        a shared session this device may write that it is not listed in the members slot of yet (a share
        or a write import that a crash cut short between its database and the slot: the push lists it)."""
        rows = await self.c.committed.fetchall(
            "SELECT l.session_id FROM logs l LEFT JOIN sync_state y ON y.session_id=l.session_id"
            " WHERE l.device_id=? AND (l.last_seq > coalesce(y.pushed_seq, 0) OR y.pending IS NOT NULL)"
            " UNION SELECT r.session_id FROM remotes r JOIN sessions s ON s.id=r.session_id"
            " WHERE r.announced=0 AND s.access IN ('owner', 'write') AND s.importing=0",
            (self.c.device_id,),
        )
        return [r[0] for r in rows]

    async def move_store(self, old_url: str) -> int:
        """The daemon moves to another store: sessions shared through the old one stay there (their
        remote names it), every other session's log is to be pushed to the new store from its start.
        Returns how many sessions are pushed again. The move noted (note_store_move) is made with it."""
        async with self.c.transaction() as tx:
            await tx.execute("DELETE FROM meta WHERE key=?", (_STORE_MOVE,))
            await tx.execute("UPDATE remotes SET store_url=? WHERE store_url IS NULL", (old_url,))
            return await tx.execute(
                "UPDATE sync_state SET pushed_seq=0, tree=NULL, pending=NULL, head_manifest=NULL "
                "WHERE session_id NOT IN (SELECT session_id FROM remotes)"
            )

    async def note_store_move(self, move: tuple[str, str] | None) -> None:
        """Note the move (old store URL, new one) that the home is told of next and move_store then makes,
        so that a start after a crash between the two finishes it (daemon/homestore.py keep_store); None:
        no move under way."""
        async with self.c.transaction() as tx:
            if move is None:
                await tx.execute("DELETE FROM meta WHERE key=?", (_STORE_MOVE,))
            else:
                await tx.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (_STORE_MOVE, json.dumps(move))
                )

    async def noted_store_move(self) -> tuple[str, str] | None:
        rows = await self.c.latest("SELECT value FROM meta WHERE key=?", (_STORE_MOVE,))
        if not rows:
            return None
        old, new = json.loads(rows[0][0])
        return old, new

    # ------------------------------------------------------------------ shared sessions
    async def peers(self, sid: str) -> list[dict]:
        return [dict(r) for r in await self.c.latest("SELECT * FROM peers WHERE session_id=? ORDER BY head_pk", (sid,))]

    async def peers_in_error(self, error: str, sids: Sequence[str] | None = None) -> dict[str, list[str]]:
        """The members whose peer row says `error` (a log away through a rekey), by session: each named by
        its device id, or the start of its head key if its log was never read."""
        where, args = _only(sids, "session_id")
        rows = await self.c.committed.fetchall(
            f"SELECT session_id, device_id, head_pk FROM peers WHERE last_error=?{where} ORDER BY session_id, head_pk",
            (error, *args),
        )
        out: dict[str, list[str]] = {}
        for r in rows:
            out.setdefault(r["session_id"], []).append(r["device_id"] or bytes(r["head_pk"]).hex()[:16])
        return out

    async def device_tallies(self, sid: str) -> dict[str, dict]:
        """Per device whose writes to `sid` are held here: its messages (`messages`, how many; `last_message_at`,
        the latest's time) and `last_seen`, the time of the latest of its operations of any kind (each as the
        device stamped it). A device's sequence numbers rise with its writes, so each latest one is read by
        its seq through the primary keys, not by a scan of the times."""
        q = self.c.committed
        out: dict[str, dict] = {}
        for device, n, at in await q.fetchall(
            "SELECT t.device_id, t.n, m.created_at FROM (SELECT device_id, count(*) AS n, max(seq) AS s"
            " FROM messages WHERE session_id=? GROUP BY device_id) t"
            " JOIN messages m ON m.session_id=? AND m.device_id=t.device_id AND m.seq=t.s",
            (sid, sid),
        ):
            out[device] = {"messages": n, "last_message_at": at, "last_seen": at}
        for device, at in await q.fetchall(
            "SELECT o.device_id, o.created_at FROM (SELECT device_id, max(seq) AS s FROM ops WHERE session_id=?"
            " GROUP BY device_id) t JOIN ops o ON o.session_id=? AND o.device_id=t.device_id AND o.seq=t.s",
            (sid, sid),
        ):
            have = out.setdefault(device, {"messages": 0, "last_message_at": None, "last_seen": None})
            have["last_seen"] = max(at, have["last_seen"] or at)
        return out

    async def keep_peers(self, sid: str, pks: list[bytes]) -> None:
        """Follow only these heads of `sid` from now on (a rekey's new generation): the others' rows go,
        with what was applied of their logs kept in the session."""
        await self.c.write(
            f"DELETE FROM peers WHERE session_id=? AND head_pk NOT IN ({','.join('?' * len(pks))})", (sid, *pks)
        )

    async def frozen_taken(self, sid: str, head_pk: bytes, rev: int) -> int | None:
        """The last seq of the frozen log of `head_pk` at `rev` that this device took whole from its manifest
        (note_frozen_taken); None if it did not."""
        row = await self.c.committed.fetchone(
            "SELECT last_seq FROM frozen_taken WHERE session_id=? AND head_pk=? AND rev=?", (sid, head_pk, rev)
        )
        return None if row is None else int(row[0])

    async def note_frozen_taken(self, sid: str, head_pk: bytes, rev: int, last_seq: int) -> None:
        """This device holds the frozen log of `head_pk` at `rev` whole, as its manifest held it: up to `last_seq`
        (schema migration 27; sync/frozenrepair.py puts back only such a log, and no further)."""
        await self.c.write(
            "INSERT INTO frozen_taken(session_id, head_pk, rev, last_seq) SELECT ?, ?, ?, ?"
            " WHERE EXISTS (SELECT 1 FROM sessions WHERE id=?)"
            " ON CONFLICT(session_id, head_pk, rev) DO UPDATE SET last_seq=excluded.last_seq",
            (sid, head_pk, rev, last_seq, sid),
        )

    async def remote(self, sid: str) -> dict | None:
        rows = await self.c.latest("SELECT * FROM remotes WHERE session_id=?", (sid,))
        return dict(rows[0]) if rows else None

    async def set_remote(self, sid: str, **fields) -> None:
        sets = ", ".join(f"{k}=?" for k in fields)
        await self.c.write(f"UPDATE remotes SET {sets} WHERE session_id=?", (*fields.values(), sid))

    async def switch_slot(self, sid: str, announce_pk: bytes) -> None:
        """`sid` gone over to the members slot of `announce_pk` (a rekey made or taken: sync/rekey.py), at its revision
        0, this device not announced in it yet; the walks for the old slot's notices dropped with it, settled
        (claimswalks.py: a later notice's walk opens under other keys, a walk of its own)."""
        async with self.c.transaction() as tx:
            await tx.execute(
                "UPDATE remotes SET announce_pk=?, members_rev=0, announced=0 WHERE session_id=?", (announce_pk, sid)
            )
            await tx.execute("DELETE FROM claims_walks WHERE session_id=?", (sid,))

    async def add_remote(self, sid: str, store_url: str | None, announce_pk: bytes) -> None:
        """`sid` shared (sync/share.py). A session deleted meanwhile (a share racing its `rm`, or the deletion of the
        session an OpenAI request made: openai_cut.drop_made) is refused `not_found` as its share would have been,
        looked at in the inserting transaction (was: the foreign key failing at the commit, answered 500)."""
        async with self.c.transaction() as tx:
            await session_row(tx, sid)
            await tx.execute(
                "INSERT OR IGNORE INTO remotes(session_id, store_url, announce_pk) VALUES (?,?,?)",
                (sid, store_url, announce_pk),
            )

    async def remote_store_urls(self) -> list[str]:
        """The other stores shared sessions sync through (imported from a code naming another store)."""
        rows = await self.c.committed.fetchall(
            "SELECT DISTINCT store_url FROM remotes WHERE store_url IS NOT NULL ORDER BY store_url"
        )
        return [r[0] for r in rows]

    async def has_shared_sessions(self) -> bool:
        return await self.c.committed.fetchone("SELECT 1 FROM remotes LIMIT 1") is not None

    async def sessions_with_heads(self, pks: list[bytes]) -> list[str]:
        """Shared sessions that follow any of these heads: a member device's log head (0xed | key), or
        the session's members slot (0xed | announce key)."""
        q = self.c.committed
        out: set[str] = set()
        for i in range(0, len(pks), 500):
            part = pks[i : i + 500]
            marks = ",".join("?" * len(part))
            slots = [pk[1:] for pk in part if pk[:1] == b"\xed"]
            rows = await q.fetchall(f"SELECT session_id FROM peers WHERE head_pk IN ({marks})", tuple(part))
            if slots:
                rows += await q.fetchall(
                    f"SELECT session_id FROM remotes WHERE announce_pk IN ({','.join('?' * len(slots))})", tuple(slots)
                )
            out.update(r[0] for r in rows)
        return sorted(out)

    async def shared_sessions(self) -> list[str]:
        return [r[0] for r in await self.c.committed.fetchall("SELECT session_id FROM remotes ORDER BY session_id")]

    async def held_revisions(self) -> list[tuple[str, str | None, bytes, int]]:
        """(session, its store URL, head, the revision of it last read here: 0 if never) for every head the
        shared sessions follow: each member device's log head (its peer row) and the members slot."""
        q = self.c.committed
        rows = await q.fetchall(
            "SELECT p.session_id, r.store_url, p.head_pk, p.rev FROM peers p JOIN remotes r USING (session_id)"
        )
        out = [(r[0], r[1], bytes(r[2]), int(r[3])) for r in rows]
        rows = await q.fetchall("SELECT session_id, store_url, announce_pk, members_rev FROM remotes")
        out += [(r[0], r[1], b"\xed" + bytes(r[2]), int(r[3])) for r in rows]
        return out


def _only(sids: Sequence[str] | None, column: str) -> tuple[str, tuple[str, ...]]:
    """A WHERE clause's part (and its arguments) that keeps the rows of `sids` only; none for None (all)."""
    if sids is None:
        return "", ()
    return f" AND {column} IN ({','.join('?' * len(sids))})", tuple(sids)
