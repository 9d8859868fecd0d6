"""A session's messages read back: one by its id, a page of a chat (or of every chat, merged in the global
order), a chat's history as a model's request is matched by, the whole conversation; only what is committed.
The base of storage/messages.py's `Messages`, which appends them."""

from __future__ import annotations

import builtins
import json

from .chatorder import in_order
from .connections import Connections, Row
from .errors import NotFound, sync_wait
from .model import message_id, parse_message_id
from .sessions import session_row

# a message of a session whose import is under way is not there yet (see apply_remote)
_VISIBLE = " AND NOT EXISTS (SELECT 1 FROM sessions WHERE id=messages.session_id AND importing)"


def message_dict(row: Row) -> dict:
    d = {
        "id": message_id(row["device_id"], row["seq"]),
        "chat": row["chat_id"],
        "role": row["role"],
        "content": row["content"],
        "tokens": row["tokens"],
        "created_at": row["created_at"],
        "device": row["device_id"],
        "seq": row["seq"],
        "lamport": row["lamport"],
    }
    if row["extra"]:
        # (the row's own fields stand: another device's extra fields may hold a "content" or an "id", which
        # sessiond keeps there never)
        for k, x in json.loads(row["extra"]).items():
            d.setdefault(k, x)
    return d


class MessageReads:
    def __init__(self, c: Connections):
        self.c = c

    async def history(self, sid: str, chat: str, limit: int = -1, *, last: bool = False) -> list[dict]:
        """The first `limit` (all: -1) messages of a chat (`last`: its last ones) as {role, content,
        tool_calls?, tool_call_id?, interrupted?, part_notes?}, oldest first (compacted ones too): what an app's
        request is matched by (a stopped answer matches the app's shorter copy of it)."""
        out = []
        order = "DESC" if last else ""
        rows = await self.c.committed.fetchall(
            "SELECT role, content, extra FROM messages WHERE session_id=? AND chat_id=? "
            f"ORDER BY lamport {order}, device_id {order}, seq {order} LIMIT ?",
            (sid, chat, limit),
        )
        for role, content, extra in reversed(rows) if last else rows:
            m = {"role": role, "content": content}
            if extra and ('"tool_call' in extra or '"interrupted"' in extra or '"part_notes"' in extra):
                e = json.loads(extra)
                kept = ("tool_calls", "tool_call_id", "interrupted", "part_notes")
                m.update({k: e[k] for k in kept if e.get(k) is not None})
            out.append(m)
        return out

    async def get(self, sid: str, mid: str) -> dict:
        dev, seq = parse_message_id(mid)
        row = await self.c.committed.fetchone(
            "SELECT * FROM messages WHERE session_id=? AND device_id=? AND seq=?" + _VISIBLE, (sid, dev, seq)
        )
        if row is None:
            await session_row(self.c.committed, sid)
            raise self._no_message(sid, mid, dev)
        return message_dict(row)

    async def order(self, sid: str, mid: str) -> tuple:
        """(lamport, device, seq, chat) of message `mid`."""
        dev, seq = parse_message_id(mid)
        row = await self.c.committed.fetchone(
            "SELECT lamport, device_id, seq, chat_id FROM messages WHERE session_id=? AND device_id=? AND seq=?"
            + _VISIBLE,
            (sid, dev, seq),
        )
        if row is None:
            await session_row(self.c.committed, sid)  # no such session: say that, not "no such message"
            raise self._no_message(sid, mid, dev)
        return tuple(row)

    def _no_message(self, sid: str, mid: str, dev: str) -> NotFound:
        """The refusal of message `mid` (written by device `dev`) that session `sid` does not hold: one another
        device wrote may only not be pulled yet, and its next pull brings it."""
        said = f"session {sid!r} has no message {mid!r}"
        if dev != self.c.device_id:
            said += (
                f" (written on device {dev}: one not pulled here yet arrives with the next pull,"
                f" `sessiond sync {sid} --wait`; then try again)"
            )
            return NotFound(said, api=[sync_wait(sid)])  # (then the request again)
        return NotFound(said)

    async def list(
        self,
        sid: str,
        *,
        chat: str | None = None,
        limit: int = 100,
        before: str | None = None,
        after: str | None = None,
        all_chats: bool = False,
        last: bool = False,
    ) -> list[dict]:
        """Up to `limit` messages in order; the first ones (past `after`), or the last ones (before
        `before`, or with `last`: read from the end, by the index, not the whole log)."""
        srow = await session_row(self.c.committed, sid)
        where: builtins.list[str] = []
        args: builtins.list = []
        if not all_chats:
            where.append("chat_id=?")
            args.append(chat or srow["current_chat"])
        if after:
            lam, dev, seq, _ = await self.order(sid, after)
            where.append("(lamport, device_id, seq) > (?,?,?)")
            args += [lam, dev, seq]
        if before:
            lam, dev, seq, _ = await self.order(sid, before)
            where.append("(lamport, device_id, seq) < (?,?,?)")
            args += [lam, dev, seq]
        desc = bool(last or (before and not after))
        if all_chats:  # every chat's page: a merge of the chats' index ranges (chatorder.py), not a sort of all
            rows = await in_order(self.c.committed, sid, "*", " AND ".join(where), tuple(args), desc=desc, limit=limit)
        else:
            order = "DESC" if desc else "ASC"
            sql = (
                f"SELECT * FROM messages WHERE session_id=? AND {' AND '.join(where)} "
                f"ORDER BY lamport {order}, device_id {order}, seq {order} LIMIT ?"
            )
            rows = await self.c.committed.fetchall(sql, (sid, *args, limit))
        if desc:
            rows.reverse()
        return [message_dict(r) for r in rows]

    async def conversation(self, sid: str) -> builtins.list[tuple]:  # `list` here is the method above
        """Every message of the session in its global order, as (device, seq, chat, role, content, tokens, extra)."""
        columns = "device_id, seq, chat_id, role, content, coalesce(tokens, 0), extra, lamport"
        return [tuple(r)[:7] for r in await in_order(self.c.committed, sid, columns)]
