"""The automatic checkpoints due and not made yet: one per append by this device that took a session's tokens
past a multiple of its checkpoint interval, each as its frontier, the session's messages as they stood right
after that append (this device's log up to that append's last message, the other devices' as far as they had
come here then). An append that passes a mark is answered, then its session's due checkpoints are made
(daemon/operations.py), from here: those of the appends that came meanwhile too, each over its own append's
conversation, not one over all of them. The checkpoint is due in memory only, and a kill -9 between the two
lost it: at start the daemon finds them here the same way, so that the proofs are the ones a daemon that did
not crash made.

Where one append ends: each that passed a mark noted the seq of its last message in `mark_ends`, in its own
transaction (storage/messages.py; schema migration 18), so the walk ends an append there. The others note
nothing (the hot path writes no more than it did), and need not: two appends taken for one (this device's
messages one after the other with one time, as two pipelined appends written in the same millisecond are)
pass a mark together only when one of them does, and then the walk ends them where the one that noted its end
did, or, when only the second did, at the end of both, which is where that one ended. An append that passed
a mark before the table was there (a database of an earlier version, its checkpoint lost by a crash) is
told by its time alone, as before."""

from __future__ import annotations

import bisect
import json
import sqlite3
from typing import Any

from .connections import Connections
from .model import CHARGE_SUM_SQL, interval_sql, row_charge

# Sessions whose tokens passed a mark after this device's latest checkpoint of them (the tokens then: the
# session's count less the charge of the messages that checkpoint does not cover, each device's past its
# frontier), and only by this device's appends (a pull passing a mark makes no checkpoint). One query: a
# session row each, its latest checkpoint by its key, and for those this device wrote to since, per device
# an index range of the messages since (at most an interval's worth of tokens, but for those due).
# `-- which`: every active session's (the start), or one's, found by its key (after each append that passed a
# mark: `(?2 IS NULL OR s.id=?2)` took no index, and each read walked every active session's row, ~17 SQLite
# steps a session, the cost of a mark growing with the sessions the daemon holds)
_CANDIDATES_OF = f"""
WITH c AS (
  SELECT s.id, s.tokens_used AS used, s.created_at,
    {interval_sql("s.policy")} AS iv,
    (SELECT frontier FROM checkpoints k WHERE k.session_id=s.id AND k.device_id=?1
      ORDER BY number DESC LIMIT 1) AS f
  FROM sessions s
  WHERE s.status IN ('active', 'paused') AND s.access NOT IN ('read', 'revoked') AND NOT s.importing
    -- which
)
SELECT id, used, created_at, iv, f FROM c
-- prefilter
WHERE EXISTS (SELECT 1 FROM mark_ends e WHERE e.session_id=c.id
    AND e.seq > coalesce((SELECT value FROM json_each(coalesce(c.f, '{{}}')) WHERE key=?1), 0))
  OR used >= iv
  AND EXISTS (SELECT 1 FROM messages WHERE session_id=c.id AND device_id=?1
    AND seq > coalesce((SELECT value FROM json_each(coalesce(c.f, '{{}}')) WHERE key=?1), 0))
  AND (used - (
  SELECT {CHARGE_SUM_SQL} FROM logs l CROSS JOIN messages m ON m.session_id=l.session_id AND m.device_id=l.device_id
    AND m.seq > coalesce((SELECT value FROM json_each(coalesce(c.f, '{{}}')) WHERE key=l.device_id), 0)
  WHERE l.session_id=c.id)) / iv < used / iv
ORDER BY id
"""
_CANDIDATES = _CANDIDATES_OF.replace("-- which", "")
# One session's (after an append that passed a mark) is read with no pre-check: the walk decides from the same
# rows, read once, not summed in SQL first (bench/workcount.py: the read 21.3 -> 1.0 VM steps an append, a mark in
# 50), and decides right where the pre-check did not: another device's negative tokens pulled after the mark (the
# net since brought the session under the interval), or an extra SQLite reads as invalid JSON (a NaN) and Python
# as a usage record (the session's tokens counted it, the SQL sum did not). The start's read of every session
# keeps a pre-check (it spares walking every session's messages since its checkpoint), which those two passed
# too: an append that passed a mark noted its end (mark_ends, a primary-key range), and a session with such an
# end past its latest checkpoint is walked whatever the sum says; the sum is for what noted none (an append
# before migration 18, an import).
_CANDIDATES_ONE = _CANDIDATES_OF.replace("-- which", "AND s.id=?2").split("-- prefilter")[0] + "ORDER BY id\n"

# a device's messages past a checkpoint's frontier, with the order they were written in here (rowid); and the
# seqs of this device's appends that passed a mark (a handful: made checkpoints delete theirs), matched in
# Python: a LEFT JOIN looked mark_ends up for every message, ~26 SQLite steps each, twice the read's own
_SINCE = (
    "SELECT m.rowid, m.device_id, m.seq, m.tokens, m.extra, m.created_at FROM messages m"
    " WHERE m.session_id=?1 AND m.device_id=?2 AND m.seq > ?3"
)
_ENDS = "SELECT seq FROM mark_ends WHERE session_id=?"
# An import's end (a file's, a fork's: its log as the import ends, a file's status and compaction the operations
# after its last message), noted when its tokens passed a mark: it is due one checkpoint over all of it (made as it
# ends, in memory). Its messages keep their own times, after the session's creation as a file gives it: lost (a
# kill -9, a stop, a failure), the checkpoint was found by the walk as one per mark the file passed, each message
# taken for an append of its own. A noted end is this device's last message at or before it (_ended).
IMPORT_END_INSERT = (
    "INSERT OR IGNORE INTO mark_ends(session_id, seq) SELECT ?1, last_seq FROM logs"
    " WHERE session_id=?1 AND device_id=?2"
)


async def missed_checkpoints(c: Connections, sid: str | None = None) -> list[tuple[str, list[dict[str, int]]]]:
    """Per session (`sid`: that one only) with automatic checkpoints due and not made, the frontier of each, in
    order; read in one snapshot on the bulk-read thread (appends go on meanwhile: each read sees the same ones)."""
    return await c.bulk(_due, c.device_id, sid)


def _due(conn: sqlite3.Connection, own: str, one: str | None) -> list[tuple[str, list[dict[str, int]]]]:
    cur = conn.cursor()
    cur.row_factory = None
    cur.execute("BEGIN")
    try:
        out = []
        found = cur.execute(_CANDIDATES, (own,)) if one is None else cur.execute(_CANDIDATES_ONE, (own, one))
        for sid, used, created, iv, f in found.fetchall():
            done: dict[str, int] = json.loads(f) if f else {}
            logs: dict[str, int] = dict(
                cur.execute("SELECT device_id, last_seq FROM logs WHERE session_id=?", (sid,)).fetchall()
            )
            ends = [seq for (seq,) in cur.execute(_ENDS, (sid,)).fetchall()]
            rows: list[Any] = []
            for device in logs:
                since = cur.execute(_SINCE, (sid, device, done.get(device, 0))).fetchall()
                at = _ended(since, ends) if device == own else {}
                rows += [(*r, at.get(r[2], 0)) for r in since]
            rows.sort()  # in the order they were written here: an append's `used` counted those before it
            cuts = _cuts(own, int(used), float(created), int(iv), done, logs, rows)
            if cuts:
                out.append((sid, cuts))
    finally:
        if conn.in_transaction:
            cur.execute("COMMIT")
        cur.close()
    return out


def _cuts(
    own: str, used: int, created: float, iv: int, done: dict[str, int], logs: dict[str, int], rows: list[tuple]
) -> list[dict[str, int]]:
    """The frontiers of the appends by this device that passed a mark, walking the messages since the
    latest checkpoint (rows: rowid, device, seq, tokens, extra, created_at, an append that passed a mark
    ended here) from the tokens it saw. An append is this device's messages written one after the other
    with one time, up to a noted end; an import's (a fork's, a file's) keep their own times, all before the
    session was made, and count as one, as its checkpoint is made. One that passed a mark ends at the noted
    end its messages come to: a re-import's tail keeps its messages' own times, which may be after the
    session was made (the app's conversation continued since), one each (an import's own run, before the
    session was made, ends where its times do, as before)."""
    charges = [row_charge(r[3], r[4]) for r in rows]  # (each message's once: the sums below are of this list)
    # each message's append time, None for an import's (its own time, before the session was made): one list, as
    # the charges (the walk runs on the bulk-read thread, taking the GIL from the event loop: a call a message less)
    batches = [r[5] if r[5] > created else None for r in rows]
    run = used - sum(charges)
    cuts = []
    i = 0
    while i < len(rows):
        j = i + 1
        if rows[i][1] == own:
            key = batches[i]
            while (
                j < len(rows)
                and not rows[j - 1][6]
                and rows[j][1] == own
                and rows[j][2] == rows[j - 1][2] + 1
                and batches[j] == key
            ):
                j += 1
        before = run
        run += sum(charges[i:j])
        if rows[i][1] == own and before // iv != run // iv:
            if batches[i] is not None:
                j = _noted_end(rows, j)
                run = before + sum(charges[i:j])
            cuts.append(_frontier(rows, j, done, logs))
        i = j
    return cuts


def _ended(since: list[tuple], ends: list[int]) -> dict[int, int]:
    """{seq: noted end} of this device's messages `since` that end an append that passed a mark: for each noted end
    (an append's last message; an import's log as it ended, operations after its last message), the last message at
    or before it."""
    seqs = sorted([r[2] for r in since])
    out: dict[int, int] = {}
    for end in ends:
        i = bisect.bisect_right(seqs, end)
        if i:
            out[seqs[i - 1]] = max(end, out.get(seqs[i - 1], 0))
    return out


def _noted_end(rows: list[tuple], j: int) -> int:
    """Where the append that passed a mark in rows[:j] ended: j, or, when rows[j-1] is not a noted end, the
    noted end this device's messages right after it come to (an append with its messages' own times, a
    re-import's tail, is not one time; an import, in appends of APPEND_BATCH messages, with its own operations
    between them: a compaction); j when none does (an append before the mark's ends were noted)."""
    k = j
    while k < len(rows) and not rows[k - 1][6] and rows[k][1] == rows[j - 1][1]:
        k += 1
    return k if rows[k - 1][6] else j


def _frontier(rows: list[tuple], upto: int, done: dict[str, int], logs: dict[str, int]) -> dict[str, int]:
    """Each device's log as far as it had come here once rows[:upto] were written: its last message of those,
    or its whole log here when none of its messages came later."""
    later = {r[1] for r in rows[upto:]}
    frontier = {d: s for d, s in done.items() if d in logs}
    for r in rows[:upto]:
        frontier[r[1]] = r[2]
    for d, last in logs.items():
        if d not in later:
            frontier[d] = last
    # this device's: that append's last message, as its log then (an import's: its log as it ended, noted)
    frontier[rows[upto - 1][1]] = rows[upto - 1][6] or rows[upto - 1][2]
    return frontier
