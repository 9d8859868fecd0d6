"""Checkpoints: signed hashes of a session's conversation, stored as operations; and the chain of
messages a checkpoint hashes, read in one snapshot on the bulk-read thread."""

from __future__ import annotations

import builtins
import json
import sqlite3
from typing import Any

from .apply import local_op
from .connections import Connections
from .missedmarks import missed_checkpoints
from .model import now
from .sessions import session_row, writable_row

# The operations that make a session's setting (sync/checkpoint.py SETTING_KINDS): its creation, its and its
# chats' updates, as (device, seq, lamport, kind, body), for a version 2 checkpoint's hash
SETTING_OPS = (
    "SELECT device_id, seq, lamport, kind, body FROM ops WHERE session_id=?"
    " AND kind IN ('session.create', 'session.update', 'chat.create', 'chat.update')"
)


def setting_ops(rows: list) -> list[tuple]:
    return [(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]


def read_chain(
    conn: sqlite3.Connection, sid: str, after: dict[str, int] | None, upto: dict[str, int] | None = None
) -> tuple[Any, dict[str, int], list[tuple], list[tuple]]:
    """Database.conversation_chain, on a stdlib connection of its own (one read transaction)."""
    cur = conn.cursor()
    cur.row_factory = None
    cur.execute("BEGIN")
    try:
        ident = cur.execute("SELECT rowid, created_at FROM sessions WHERE id=?", (sid,)).fetchone()
        frontier = dict(cur.execute("SELECT device_id, last_seq FROM logs WHERE session_id=?", (sid,)).fetchall())
        if upto is not None:  # as far as an earlier point in each log (a checkpoint made late: missedmarks.py)
            frontier = {d: min(s, upto[d]) for d, s in frontier.items() if upto.get(d)}
        rows: list[tuple] = []
        for device, hi in frontier.items():
            lo = (after or {}).get(device, 0)
            if hi > lo:
                rows += cur.execute(
                    "SELECT lamport, device_id, seq, chat_id, role, content, coalesce(tokens, 0), extra"
                    " FROM messages WHERE session_id=? AND device_id=? AND seq>? AND seq<=?",
                    (sid, device, lo, hi),
                ).fetchall()
        ops = setting_ops(cur.execute(SETTING_OPS, (sid,)).fetchall())
    finally:
        if conn.in_transaction:
            cur.execute("COMMIT")
        cur.close()
    rows.sort(key=lambda r: r[:3])  # global order: (lamport, device, seq) is unique
    return ident, frontier, rows, ops


def checkpoint_dict(sid: str, r: Any) -> dict:
    """A checkpoint row as its proof: `v` from version 2 (none: version 1), and the fields beyond those
    this sessiond knows that a newer one's proof carried (kept, so that the proof is listed whole)."""
    out = {
        "session": sid,
        "device": r["device_id"],
        "number": r["number"],
        "hash": r["hash"].hex(),
        "tokens": r["tokens"],
        "messages": r["messages"],
        "frontier": json.loads(r["frontier"]),
        "created_at": r["created_at"],
        "pk": r["pk"].hex(),
        "signature": r["signature"].hex(),
    }
    if r["v"] is not None:
        out["v"] = r["v"]
    if r["more"]:
        out = json.loads(r["more"]) | out
    return out


class Checkpoints:
    def __init__(self, c: Connections):
        self.c = c

    async def add(self, sid: str, body: dict) -> dict:
        async with self.c.transaction() as tx:
            # a write like any other: refused past the session's expiry or idle timeout (it would reset the
            # idle clock and revive a session that has expired); its end's final checkpoint follows the end
            row = await writable_row(tx, sid, self.c)
            await local_op(tx, self.c.device_id, sid, row["lamport"], "checkpoint.add", body, now())
            # the appends it covers that passed a mark need their ends no more (missedmarks.py)
            covered = body["frontier"].get(self.c.device_id, 0)
            await tx.execute("DELETE FROM mark_ends WHERE session_id=? AND seq<=?", (sid, covered))
            tx.emit({"type": "checkpoint.created", "session": sid, "number": body["number"]})
        return body

    async def setting_ops(self, sid: str) -> builtins.list[tuple]:
        """The operations that make the session's setting, as setting() takes them (SETTING_OPS)."""
        return setting_ops(await self.c.committed.fetchall(SETTING_OPS, (sid,)))

    async def signers(self, sid: str) -> set[bytes]:
        """The head keys that signed the checkpoints of `sid` held here."""
        rows = await self.c.committed.fetchall("SELECT DISTINCT pk FROM checkpoints WHERE session_id=?", (sid,))
        return {bytes(r[0]) for r in rows}

    async def list(self, sid: str) -> list[dict]:
        """The session's checkpoints in the order of the history they cover: by how many operations their
        frontier covers (one whose frontier covers another's comes after it), then by time, device and number.
        Not by time first: a checkpoint's time is its writer's clock, and one made earlier by a clock set ahead
        came after the final checkpoint of an `end`, which `end` then named as its last."""
        q = self.c.committed
        await session_row(q, sid)
        proofs = [
            checkpoint_dict(sid, r)
            for r in await q.fetchall(
                "SELECT * FROM checkpoints WHERE session_id=? ORDER BY created_at, device_id, number", (sid,)
            )
        ]
        proofs.sort(key=_covered)  # (stable: ties keep the order of the query)
        return proofs

    async def latest_own(self, sid: str) -> dict | None:
        """This device's latest checkpoint of the session (its highest number), or None."""
        row = await self.c.committed.fetchone(
            "SELECT * FROM checkpoints WHERE session_id=? AND device_id=? ORDER BY number DESC LIMIT 1",
            (sid, self.c.device_id),
        )
        return None if row is None else checkpoint_dict(sid, row)

    async def unproven_ends(self) -> builtins.list[str]:
        """The sessions this device ended whose final checkpoint is missing: the end is this device's last
        status change and no checkpoint of its own follows it in its log, and its latest checkpoint (if any)
        does not count every message held. `end` commits the status first, then makes the checkpoint; a
        crash between them (kill -9) leaves these, which the next start proves (Operations.finish_ends)."""
        dev = self.c.device_id
        rows = await self.c.committed.fetchall(
            "SELECT s.id FROM sessions s WHERE s.status='ended' AND s.access NOT IN ('read', 'revoked')"
            " AND NOT s.importing"
            " AND coalesce((SELECT max(seq) FROM ops WHERE session_id=s.id AND device_id=? AND kind='session.update'"
            "   AND json_extract(body, '$.status')='ended'), 0)"
            " > coalesce((SELECT max(seq) FROM ops WHERE session_id=s.id AND device_id=? AND kind='checkpoint.add'), 0)"
            " AND coalesce((SELECT messages FROM checkpoints WHERE session_id=s.id AND device_id=?"
            "   ORDER BY number DESC LIMIT 1), -1) != (SELECT count(*) FROM messages WHERE session_id=s.id)"
            " ORDER BY s.id",
            (dev, dev, dev),
        )
        return [r[0] for r in rows]

    async def missed(self, sid: str | None = None) -> builtins.list[tuple[str, builtins.list[dict[str, int]]]]:
        return await missed_checkpoints(self.c, sid)

    async def next_number(self, sid: str) -> int:
        row = await self.c.committed.fetchone(
            "SELECT max(number) FROM checkpoints WHERE session_id=? AND device_id=?", (sid, self.c.device_id)
        )
        assert row is not None  # an aggregate answers one row
        return (row[0] or 0) + 1

    async def chain(
        self, sid: str, after: dict[str, int] | None, upto: dict[str, int] | None = None
    ) -> tuple[Any, dict[str, int], builtins.list[tuple], builtins.list[tuple]]:
        """For checkpoints, from one snapshot: the session's identity (its row id and creation time, which
        tell a session from a later one of the same id), its frontier (each device's last seq here,
        as `devices`), its messages as (lamport, device, seq, chat, role, content, tokens, extra) with
        after[d] < seq <= frontier[d] for every device d (after None: all of them), in global order, and the
        operations that make its setting (all of them: setting() keeps those a frontier covers). `upto`:
        the frontier to read up to, not the session's now."""
        return await self.c.bulk(read_chain, sid, after, upto)


def _covered(proof: dict) -> int:
    """How many operations a checkpoint's frontier covers, all devices' together."""
    frontier = proof["frontier"]
    if not isinstance(frontier, dict):
        return 0
    return sum(v for v in frontier.values() if isinstance(v, int) and not isinstance(v, bool))
