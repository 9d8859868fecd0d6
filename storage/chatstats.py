"""What one session's statistics (storage/stats.py) read of each chat: its message count, kept by trigger beside
its active tokens in `chat_tokens` (schema migration 25), and the walk of its messages that averages its response
times, kept in `chat_walks` as far as the last statistics read it, so that the next one walks only the messages
written since. `stats SESSION`, a session shown (its message count) and the message total of all sessions read a
row per chat, not every message.

The count: `chat_tokens.messages` of (session, chat) is the number of the chat's messages after every statement,
kept by migration 22's triggers of a message in, out or moved, whose upsert of the chat's row now runs for every
message (it ran for those with counted tokens only): one upsert an append, as before.

The walk (storage/stats.py's, in (lamport, device_id, seq) order): the waits from a segment's first user message
to the assistant message that closes it (counted if not before it), and the answers' measured times (an integer
`extra.response.first_token_ms` or `total_ms`). Its state after the chat's messages up to a key (`w_*`, the last
one walked; `walked` of them) is all a later walk needs to go on: the sums, and the pending segment's first user
message. Triggers would keep it on every append, at ~2.5 times the append's VM steps (a measured attempt, for the
segment around each message: bench/results/profile-scale.md); kept by the reads instead, an append writes nothing
more. The state holds while every message up to its key is the one walked: messages are written once (a delete
or an update of one drops its chat's state, by trigger), so a message written since at or before the key (another
device's, landing anywhere in the order) is the only change, and shows as a count: the chat's count differs from
`walked` plus the messages after the key. The walk then starts again from the chat's first message.

Migration 25 fills both for the messages already here (the walk in SQL: `_walked`)."""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from .contexttotals import counts_in_context, message_triggers
from .errors import DatabaseLost, file_size_limit, is_disk_full

# -- the count, by trigger (migration 22's, replaced: the same active tokens, and the count in the same upsert)


def _count(m: str, sign: str = "", of: str = "") -> str:
    """Add message row `m` to its chat's row (`sign` "-": take it): its count, and its active tokens if it counts
    in the context, as contexttotals.py `_add` did (which upserted only then). `of`: SQL of the row's tokens in
    the context (migration 36's, storage/contextcount.py); none: its tokens (migration 25's)."""
    if of:
        tokens = f"CASE WHEN {of} <> 0 AND {counts_in_context(m)} THEN {of} ELSE 0 END"
    else:
        tokens = f"CASE WHEN coalesce({m}.tokens, 0) <> 0 AND {counts_in_context(m)} THEN {m}.tokens ELSE 0 END"
    return (
        f"INSERT INTO chat_tokens(session_id, chat_id, active, messages) SELECT {m}.session_id, {m}.chat_id,"
        f" {sign}{tokens}, {sign}1 WHERE true ON CONFLICT(session_id, chat_id) DO UPDATE SET"
        " active = active + excluded.active, messages = messages + excluded.messages;"
    )


count_message = _count  # (migration 36's triggers, storage/contextcount.py)


async def chat_messages(q: Any, sid: str, chat: str) -> int:
    """How many messages the chat holds (its kept count: a row read)."""
    row = await q.fetchone("SELECT messages FROM chat_tokens WHERE session_id=? AND chat_id=?", (sid, chat))
    return row[0] if row else 0


# -- the walk's state, filled by the migration


def _response(m: str, field: str) -> tuple[str, str]:
    """(count, value) SQL of message `m`'s integer extra.response.`field` (JSON true 1, false 0: Python's ints)."""
    path = f"'$.response.{field}'"
    valid = f"instr({m}.extra, '\"response\"') AND json_valid({m}.extra)"
    kind = f"CASE WHEN {valid} THEN json_type({m}.extra, {path}) END"
    whole = "('integer', 'true', 'false')"
    return (
        f"coalesce({kind} IN {whole}, 0)",
        f"CASE WHEN {kind} IN {whole} THEN json_extract({m}.extra, {path}) ELSE 0 END",
    )


def _in_chat(m: str, x: str) -> str:
    return f"{m}.session_id={x}.session_id AND {m}.chat_id={x}.chat_id"


def _key(m: str) -> str:
    return f"({m}.lamport, {m}.device_id, {m}.seq)"


def _order(m: str, desc: bool = False) -> str:
    d = " DESC" if desc else ""
    return f"ORDER BY {m}.lamport{d}, {m}.device_id{d}, {m}.seq{d} LIMIT 1"


def _pending(x: str) -> str:
    """SQL: the time of the first user message after the last assistant message of `x`'s chat (null: none)."""
    last = (
        f"(SELECT a.lamport, a.device_id, a.seq FROM messages a WHERE {_in_chat('a', x)} AND a.role='assistant'"
        f" {_order('a', desc=True)})"
    )
    first = f"FROM messages u WHERE {_in_chat('u', x)} AND u.role='user'"
    return (
        f"CASE WHEN {last.replace('a.lamport, a.device_id, a.seq', '1', 1)} THEN (SELECT u.created_at {first}"
        f" AND {_key('u')} > {last} {_order('u')}) ELSE (SELECT u.created_at {first} {_order('u')}) END"
    )


_SMALL = 2**31  # ms: a time at least this far from 0 leaves its chat out of migration 25's fill (`_walked`)


def _walked() -> str:
    """SELECT of a `chat_walks` row per chat, walked to its last message, in SQL. `g`: the assistant messages up to
    and with each message; a user message's segment is its `g`, an assistant's `g - 1`, and a segment's wait is
    from its first user message to its assistant message."""
    segs = (
        "SELECT session_id, chat_id, role, created_at, g - (role='assistant') AS seg,"
        " row_number() OVER (PARTITION BY session_id, chat_id, g - (role='assistant'), role"
        " ORDER BY lamport, device_id, seq) AS r FROM (SELECT m.session_id, m.chat_id, m.role, m.created_at,"
        " m.lamport, m.device_id, m.seq, count(*) FILTER (WHERE m.role='assistant') OVER (PARTITION BY"
        " m.session_id, m.chat_id ORDER BY m.lamport, m.device_id, m.seq) AS g FROM messages m"
        " WHERE m.role IN ('user', 'assistant'))"
    )
    pairs = (
        "SELECT session_id, chat_id, max(CASE WHEN role='assistant' THEN created_at END) AS a,"
        " max(CASE WHEN role='user' AND r=1 THEN created_at END) AS f"
        f" FROM ({segs}) GROUP BY session_id, chat_id, seg"
    )
    waits = (
        "SELECT session_id, chat_id, sum(coalesce(p.a >= p.f, 0)) AS waits,"
        f" sum(CASE WHEN p.a >= p.f THEN p.a - p.f ELSE 0 END) AS wait_sum FROM ({pairs}) p"
        " GROUP BY session_id, chat_id"
    )
    firsts, first_ms = _response("m", "first_token_ms")
    answers, answer_ms = _response("m", "total_ms")
    last = ", ".join(
        f"(SELECT t.{c} FROM messages t WHERE {_in_chat('t', 'm')} {_order('t', desc=True)}) AS w_{a}"
        for c, a in (("lamport", "lamport"), ("device_id", "device"), ("seq", "seq"))
    )
    # A time of 2**31 ms or more (another device's, as its writer made it) may sum past SQLite's integers, which fails
    # the statement: summed as 0, its chat left out of the fill (`big`; its statistics walk it when first read).
    small = f"abs({first_ms}) < {_SMALL} AND abs({answer_ms}) < {_SMALL}"
    return (
        f"SELECT session_id, chat_id, {WALK_COLUMNS} FROM (SELECT m.session_id, m.chat_id, {last},"
        f" count(*) AS walked, coalesce(w.waits, 0) AS waits, coalesce(w.wait_sum, 0) AS wait_sum,"
        f" {_pending('m')} AS pending, sum({firsts}) AS firsts, sum(CASE WHEN {small} THEN {first_ms} ELSE 0 END)"
        f" AS first_ms, sum({answers}) AS answers, sum(CASE WHEN {small} THEN {answer_ms} ELSE 0 END) AS answer_ms,"
        f" max(NOT ({small})) AS big"
        f" FROM messages m LEFT JOIN ({waits}) w ON w.session_id=m.session_id AND w.chat_id=m.chat_id"
        " GROUP BY m.session_id, m.chat_id) WHERE NOT big"
    )


WALK_COLUMNS = "w_lamport, w_device, w_seq, walked, waits, wait_sum, pending, firsts, first_ms, answers, answer_ms"
_FORGET = "DELETE FROM chat_walks WHERE session_id={m}.session_id AND chat_id={m}.chat_id;"
# 25: see the module's docstring. As with contexttotals.MIGRATION, a change to what these helpers make is a new
# migration, never an edit here (edited once, 2026-12-06, before any release took it: its fill failed with "integer
# overflow" on another device's times summing past SQLite's integers, and now leaves those chats out, the same
# rows otherwise). Migration 22's triggers of a message in, out or moved are made again with the
# count; its others (of a chat's cut, of the texts, of a session deleted, which takes the rows out) stay.
MIGRATION = f"""
ALTER TABLE chat_tokens ADD COLUMN messages INTEGER NOT NULL DEFAULT 0;
INSERT INTO chat_tokens(session_id, chat_id, active, messages)
    SELECT session_id, chat_id, 0, count(*) FROM messages GROUP BY session_id, chat_id
    ON CONFLICT(session_id, chat_id) DO UPDATE SET messages = excluded.messages;
DROP TRIGGER chat_tokens_message_insert;
DROP TRIGGER chat_tokens_message_delete;
DROP TRIGGER chat_tokens_message_update;
{message_triggers(_count)}CREATE TABLE chat_walks (
    session_id TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    w_lamport INTEGER NOT NULL,
    w_device TEXT NOT NULL,
    w_seq INTEGER NOT NULL,
    walked INTEGER NOT NULL,
    waits INTEGER NOT NULL,
    wait_sum REAL NOT NULL,
    pending REAL,
    firsts INTEGER NOT NULL,
    first_ms INTEGER NOT NULL,
    answers INTEGER NOT NULL,
    answer_ms INTEGER NOT NULL,
    PRIMARY KEY (session_id, chat_id)
) WITHOUT ROWID;
INSERT INTO chat_walks(session_id, chat_id, {WALK_COLUMNS}) {_walked()};
CREATE TRIGGER chat_walks_message_delete AFTER DELETE ON messages BEGIN
    {_FORGET.format(m="old")}
END;
CREATE TRIGGER chat_walks_message_update
AFTER UPDATE OF session_id, chat_id, device_id, seq, lamport, role, created_at, extra ON messages BEGIN
    {_FORGET.format(m="old")}
    {_FORGET.format(m="new")}
END;
CREATE TRIGGER chat_walks_session_delete AFTER DELETE ON sessions BEGIN
    DELETE FROM chat_walks WHERE session_id=old.id;
END;
"""

# -- the walk, in Python (what the statistics read)

# (key, walked, waits, wait_sum, pending, firsts, first_ms, answers, answer_ms)
_FRESH = (None, 0, 0, 0.0, None, 0, 0, 0, 0)


def walk(state: tuple, rows: list, last: tuple | None) -> tuple:
    """The walk's state `state` taken on over `rows` (role, created_at, extra, in order), the last at key `last`."""
    key, walked, waits, wait_sum, pending, firsts, first_ms, answers, answer_ms = state
    for role, t, extra in rows:
        if extra and '"response"' in extra:
            r = json.loads(extra).get("response")
            if not isinstance(r, dict):  # (another device's map, as its writer made it: no time, as migration 25's)
                r = {}
            if isinstance(r.get("first_token_ms"), int):
                firsts, first_ms = firsts + 1, first_ms + r["first_token_ms"]
            if isinstance(r.get("total_ms"), int):
                answers, answer_ms = answers + 1, answer_ms + r["total_ms"]
        if role == "user":
            if pending is None:
                pending = t
        elif role == "assistant" and pending is not None:
            if t >= pending:  # (an import keeps its source's times as given: one may go back)
                waits, wait_sum = waits + 1, wait_sum + (t - pending)
            pending = None
    if rows:
        key, walked = last, walked + len(rows)
    return key, walked, waits, wait_sum, pending, firsts, first_ms, answers, answer_ms


# The chat's messages after a key (in the order of the messages_order index: no sort), then the chat's count and its
# last message's key: that count is the walked ones' and these only if no message came, before the key or after
# the messages read, between the two reads (messages are only added: each adds to the count).
_TAIL = (
    "SELECT role, created_at, extra FROM messages WHERE session_id=? AND chat_id=? AND (lamport, device_id, seq) >"
    " (?, ?, ?) ORDER BY lamport, device_id, seq"
)
_END = (
    "SELECT (SELECT messages FROM chat_tokens WHERE session_id=?1 AND chat_id=?2), lamport, device_id, seq"
    " FROM messages WHERE session_id=?1 AND chat_id=?2 ORDER BY lamport DESC, device_id DESC, seq DESC LIMIT 1"
)
_LOWEST = (-(2**63), "", -(2**63))  # below every key


def _fits(state: list) -> bool:
    """Whether a walk's numbers are SQLite's to keep: times in range each (another device's, as its writer made
    them) may sum past its integers; such a walk is answered, not kept (the next one walks again)."""
    return all(not isinstance(v, int) or -(2**63) <= v < 2**63 for v in state)


async def chat_walks(c: Any, sid: str, chats: list[str]) -> dict[str, tuple]:
    """The walk's state over every message of each of the session's `chats`, by chat: from its kept state on over
    the messages written since; from the chat's start if a message came before the state's key meanwhile (or
    while it read). The states that moved are kept for the next read: each true of what it walked (a message
    written since, anywhere, is found as above)."""
    q = c.committed
    kept = {
        r[0]: ((r[1], r[2], r[3]), *r[4:])
        for r in await q.fetchall(f"SELECT chat_id, {WALK_COLUMNS} FROM chat_walks WHERE session_id=?", (sid,))
    }
    out, moved = {}, []
    for chat in chats:
        state = kept.get(chat, _FRESH)
        for attempt in (state, _FRESH):
            rows = await q.fetchall(_TAIL, (sid, chat, *(attempt[0] or _LOWEST)))
            end = await q.fetchone(_END, (sid, chat))
            total, last = (end[0], tuple(end[1:])) if end else (0, None)
            whole = attempt[1] + len(rows) == total
            if whole:
                break
        out[chat] = walk(attempt, rows, last)
        if whole and (rows or attempt is not state):
            moved.append((chat, out[chat]))
    if moved:
        # a read's cache: where writes are refused (the database gone, the disk full, the file-size limit met), the
        # numbers are answered still, as every read's are, and the next statistics walk again
        try:
            async with c.transaction() as tx:
                for chat, (key, *rest) in moved:
                    if key is None or not _fits(rest):  # (a chat with no message: nothing to keep)
                        continue
                    await tx.execute(
                        f"INSERT OR REPLACE INTO chat_walks(session_id, chat_id, {WALK_COLUMNS})"
                        f" SELECT ?, ?, {', '.join('?' * 11)} WHERE EXISTS (SELECT 1 FROM sessions WHERE id=?)",
                        (sid, chat, *key, *rest, sid),
                    )
        except DatabaseLost:
            pass
        except sqlite3.Error as exc:  # (SQLite's own error: the route makes disk_full of it only for an answer)
            if not is_disk_full(exc, os.path.dirname(c.path)) and file_size_limit(exc) is None:
                raise
    return out
