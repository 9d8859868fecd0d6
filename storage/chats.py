"""Chats of a session: create, read, list, and find one by id or name."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .activity import stamp
from .apply import local_op
from .connections import Connections, Row
from .errors import Conflict, LimitReached, NotFound, new_session_ways, switch_chat_way
from .expiry import refuse_if_expiry_ended
from .ids import check_id, new_id
from .model import message_id, now
from .sessions import session_row, writable_row


def cutoff_id(compacted: str | None) -> str | None:
    """The id of the last message a chat's compaction dropped (its stored cutoff), or None."""
    if not compacted:
        return None
    _lam, dev, seq = json.loads(compacted)
    return message_id(dev, seq)


async def refuse_if_ended(q: Any, sid: str, session: Row) -> None:
    """An ended session's chats are final: no new chat, no change of one (its fields, its compaction); refused as
    `expired`, naming when, if its expiry ended it (read through `q`), as every other change of it is."""
    if session["status"] == "ended":
        await refuse_if_expiry_ended(q, sid, session)
        raise Conflict(
            f"session {sid!r} has ended; its chats cannot change (go on in a clone: `sessiond clone {sid}`)",
            reason="ended",
            api=new_session_ways(sid, fork=False),
        )


# A chat's row with its system prompt, which is kept beside it (migration 21: out of the row an append reads)
CHAT_SELECT = (
    "SELECT c.*, p.system_prompt FROM chats c LEFT JOIN chat_prompts p ON p.session_id=c.session_id AND p.chat_id=c.id"
)


def chat_dict(row: Row, current: str | None) -> dict:
    return {
        "id": row["id"],
        "name": row["name"],
        "system_prompt": row["system_prompt"],
        "model": row["model"],
        "settings": json.loads(row["settings"]),
        "created_at": row["created_at"],
        "current": row["id"] == current,
        "policy": json.loads(row["policy"]),
        "compacted_upto": cutoff_id(row["compacted"]),
    }


async def refuse_taken_name(tx: Any, sid: str, cid: str, name: str, *, new: bool) -> None:
    """A chat is picked by its id or, failing that, its name (Chats.resolve): chat `cid` named `name` must
    leave every chat of the session one way to be picked. Refused (409): a name that is another chat's id
    (the other would be picked), or another chat's name (neither could be), and the id of a `new` chat that
    is another chat's name (that one could no longer be). An empty name picks no chat (refused where a chat
    is named). Chats made on other devices at once may still share a name: Chats.resolve says so then."""
    rows = await tx.fetchall(
        "SELECT id, name FROM chats WHERE session_id=? AND id<>? AND (id=? OR name=? OR name=?)",
        (sid, cid, name, name, cid if new else name),
    )
    for other, other_name in rows:
        if new and other_name == cid:  # first: a new chat given no name is named with its id, and the id is the fix
            raise Conflict(
                f"{cid!r} is the name of another chat of session {sid!r} (chat {other!r}): a chat is picked by its"
                " id first, so that one could no longer be picked by its name; choose another id",
                reason="name_taken",
            )
        if other == name:
            raise Conflict(
                f"{name!r} is the id of another chat of session {sid!r}: a chat is picked by its id or its name, and"
                f" {name!r} picks that one; choose another name",
                reason="name_taken",
            )
        if other_name == name and name:
            raise Conflict(
                f"session {sid!r} already has a chat named {name!r} (chat {other!r}): a chat is picked by its name,"
                " so two cannot share one; choose another name",
                reason="name_taken",
            )


class Chats:
    def __init__(self, c: Connections):
        self.c = c

    async def create(self, sid: str, spec: dict) -> dict:
        cid = spec.get("id")
        cid = check_id(cid, "chat id") if cid is not None else new_id()
        t = stamp()  # (now(), read before the wait for the writer: its clock steps counted with it, activity.py)
        name = spec.get("name") or cid
        body = {
            "id": cid,
            "name": name,
            "system_prompt": spec.get("system_prompt"),
            "model": spec.get("model"),
            "settings": spec.get("settings") or {},
            "created_at": t,
        }
        if spec.get("policy"):
            body["policy"] = spec["policy"]
        async with self.c.transaction() as tx:
            row = await writable_row(tx, sid, self.c)
            await refuse_if_ended(tx, sid, row)
            if await tx.fetchone("SELECT 1 FROM chats WHERE session_id=? AND id=?", (sid, cid)):
                raise Conflict(f"session {sid!r} already has a chat {cid!r}", reason="exists")
            await refuse_taken_name(tx, sid, cid, name, new=True)
            cap = self.c.limits.get("max_chats_per_session")
            n = (await tx.fetchall("SELECT count(*) FROM chats WHERE session_id=?", (sid,)))[0][0] if cap else 0
            if cap and n >= cap:  # (n: more than cap once the limit was lowered below what the session holds)
                many = n > 1  # (its one chat is the current one: no switch to name)
                raise LimitReached(
                    f"session {sid!r} already has "
                    + (f"{n} chats" if many else "its one chat")
                    + f" and max_chats_per_session ({cap}) allows no more: go on in "
                    + (f"one of them (`sessiond chat switch {sid} CHAT`)" if many else "it")
                    + ", or raise max_chats_per_session in the daemon's config.toml",
                    limit="max_chats_per_session",
                    value=cap,
                    api=[switch_chat_way(sid)] if many else [],
                )
            op = await local_op(tx, self.c.device_id, sid, row["lamport"], "chat.create", body, t)
            if spec.get("switch"):
                await local_op(tx, self.c.device_id, sid, op.lamport, "session.update", {"current_chat": cid}, t)
            tx.emit({"type": "chat.created", "session": sid, "chat": cid})
            if spec.get("switch"):  # announced as `chat switch` announces it
                tx.emit({"type": "chat.switched", "session": sid, "fields": ["current_chat"], "chat": cid})
        return await self.get(sid, cid)

    async def update(self, sid: str, cid: str, change: Callable[[dict], dict]) -> dict:
        """Change a chat: `change(the chat as it is)` gives the fields to write (daemon/validate.chat_patch),
        computed in the write transaction so that a merge of settings starts from what is stored. Written as
        one chat.update operation, which syncs to other devices. An ended session's chats are final."""
        async with self.c.transaction() as tx:
            srow = await writable_row(tx, sid, self.c)
            await refuse_if_ended(tx, sid, srow)
            row = await tx.fetchone(CHAT_SELECT + " WHERE c.session_id=? AND c.id=?", (sid, cid))
            if row is None:
                raise NotFound(f"session {sid!r} has no chat {cid!r} (see `sessiond chat ls {sid}`)")
            fields = change(chat_dict(row, srow["current_chat"]))
            if "name" in fields and fields["name"] != row["name"]:
                await refuse_taken_name(tx, sid, cid, fields["name"], new=False)
            await local_op(tx, self.c.device_id, sid, srow["lamport"], "chat.update", {"chat": cid, **fields}, now())
            tx.emit({"type": "chat.updated", "session": sid, "chat": cid, "fields": sorted(fields)})
        return await self.get(sid, cid)

    async def get(self, sid: str, cid: str) -> dict:
        q = self.c.committed
        srow = await session_row(q, sid)
        row = await q.fetchone(CHAT_SELECT + " WHERE c.session_id=? AND c.id=?", (sid, cid))
        if row is None:
            raise NotFound(f"session {sid!r} has no chat {cid!r} (see `sessiond chat ls {sid}`)")
        return chat_dict(row, srow["current_chat"])

    async def list(self, sid: str) -> list[dict]:
        q = self.c.committed
        srow = await session_row(q, sid)
        rows = await q.fetchall(CHAT_SELECT + " WHERE c.session_id=? ORDER BY c.created_at, c.id", (sid,))
        return [chat_dict(r, srow["current_chat"]) for r in rows]

    async def resolve(self, sid: str, ref: str) -> str:
        """A chat given by id or, failing that, by a unique name."""
        q = self.c.committed
        if await q.fetchone("SELECT 1 FROM chats WHERE session_id=? AND id=?", (sid, ref)):
            return ref
        rows = await q.fetchall("SELECT id FROM chats WHERE session_id=? AND name=?", (sid, ref))
        if len(rows) == 1:
            return rows[0][0]
        if rows:
            raise Conflict(f"several chats of session {sid!r} are named {ref!r}; use the chat id", reason="ambiguous")
        await session_row(q, sid)  # no such session: say that, rather than that it has no such chat
        raise NotFound(f"session {sid!r} has no chat {ref!r} (see `sessiond chat ls {sid}`)")
