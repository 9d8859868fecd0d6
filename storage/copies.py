"""Clone and fork: a new session made from one held here (its settings and chats; a fork also its
history up to a message, with each chat's compaction as it stood there). Composed of the query objects
it writes through, as the Database facade is."""

from __future__ import annotations

import json

from .chatorder import in_order
from .chats import Chats
from .connections import Connections
from .context import Context
from .errors import crash_at
from .limits import check_copy_chats, check_fork
from .messages import Messages
from .model import COPIED_FIELDS, row_charge
from .sessions import Sessions


class Copies:
    def __init__(self, c: Connections, sessions: Sessions, chats: Chats, messages: Messages, budgets: Context):
        self.c = c
        self.sessions = sessions
        self.chats = chats
        self.messages = messages
        self.budgets = budgets

    async def clone(self, sid: str, *, new_id: str | None = None, name: str | None = None) -> dict:
        """A new session with the same settings, chats and initial context, and no conversation."""
        spec = await self._copy_spec(sid)
        check_copy_chats(self.c.limits, f"a clone of session {sid!r}", len(spec["chats"]))
        spec.update(id=new_id, provenance={"kind": "clone", "session": sid})
        if name is not None:  # (an empty name asked for too, as create takes it; left out: the source's)
            spec["name"] = name
        return await self.sessions.create(spec)

    async def fork(self, sid: str, at: str, *, new_id: str | None = None, name: str | None = None) -> dict:
        """A new session holding the history up to and including message `at` (in every chat), each chat's
        context compacted as it was at that message, and the chat of `at` its current one.

        It is written in several transactions (the session, its copied history, the cutoffs) and made as an
        import from a file is (`file_import`): hidden until the last one, then shown whole; a crash before
        that leaves no half-made fork, the next start deletes what was written (unfinished_file_imports)."""
        await self.sessions.get(sid)  # an unknown session is named as such, not as a missing message
        lam, dev, seq, chat = await self.messages.order(sid, at)
        spec = await self._copy_spec(sid)
        # the session as it stood at the message: a chat made after it is not in the fork (one made on two
        # devices at once under one id, once before the message, is)
        made: dict[str, bool] = {}
        for body, after in await self.c.committed.fetchall(
            "SELECT body, (lamport, device_id, seq) > (?,?,?) FROM ops WHERE session_id=? AND kind='chat.create'",
            (lam, dev, seq, sid),
        ):
            cid = json.loads(body).get("id")
            made[cid] = made.get(cid, True) and bool(after)
        spec["chats"] = [c for c in spec["chats"] if not made.get(c["id"])]
        check_copy_chats(self.c.limits, f"a fork of session {sid!r} at message {at!r}", len(spec["chats"]))
        # its current chat is the fork point's: the next message follows that one
        spec.update(id=new_id, provenance={"kind": "fork", "session": sid, "message": at}, current_chat=chat)
        if name is not None:
            spec["name"] = name
        # (each chat's messages up to the fork point, merged: chatorder.py; not every message of the session sorted)
        rows = await in_order(
            self.c.committed,
            sid,
            "chat_id, role, content, tokens, extra, lamport, device_id, seq, created_at",
            "(lamport, device_id, seq) <= (?,?,?)",
            (lam, dev, seq),
        )
        cuts = await self._cuts_at(sid, (lam, dev, seq))
        check_fork(self.c.limits, sid, at, [r[0] for r in rows])
        # the tokens of the history it copies, as its quota counts them (a model's answer with its prompt's):
        # its own total holds them, the totals of several sessions count them once (stats.py)
        spec["provenance"]["copied_tokens"] = sum(row_charge(r[3], r[4]) for r in rows)
        new = await self.sessions.create(spec, file_import=True)
        try:
            crash_at("fork.created")
            if rows:
                # (the row's own fields, not those another device's extra fields may hold: sessiond keeps none there)
                msgs = [
                    {**(json.loads(r[4]) if r[4] else {}), "chat": r[0], "role": r[1], "content": r[2], "tokens": r[3]}
                    for r in rows
                ]
                # the history was accepted once: copied as it is, past the quota or a context budget (these
                # apply to what the fork adds next), its chats then compacted where the source's were
                # each copy keeps its message's own time (the fork's own is the session's created_at); times
                # are not in the checkpoints' conversation hash (docs/FORMATS.md §8), so proofs are unchanged
                stored = await self.messages.append(
                    new["id"], msgs, answer=True, times=[r[8] for r in rows], importing=True
                )
                moved = {}
                for r, m in zip(rows, stored, strict=True):
                    cut = cuts.get(r[0])
                    if cut is not None and tuple(r[5:8]) <= tuple(cut):
                        moved[r[0]] = [m["lamport"], m["device"], m["seq"]]
                crash_at("fork.copied")
                if moved:
                    await self.budgets.set_cuts(new["id"], moved, importing=True)
            await self.sessions.end_file_import([new["id"]])
        except BaseException:
            await self.sessions.delete(new["id"])
            raise
        return await self.sessions.get(new["id"], counts=True)

    async def _cuts_at(self, sid: str, order: tuple) -> dict[str, list]:
        """Each chat's compaction cutoff as it stood at the message of this (lamport, device, seq): the
        last one set before it (last-writer-wins by (lamport, device), as apply.py's update_chat)."""
        cuts: dict = {}
        for (body,) in await self.c.committed.fetchall(
            "SELECT body FROM ops WHERE session_id=? AND kind='chat.update' AND (lamport, device_id, seq) < (?,?,?)"
            " ORDER BY lamport, device_id, seq",
            (sid, *order),
        ):
            b = json.loads(body)
            if "compacted" in b:
                cuts[b.get("chat")] = b["compacted"]
        return {c: cut for c, cut in cuts.items() if cut is not None}

    async def _copy_spec(self, sid: str) -> dict:
        s = await self.sessions.get(sid)
        chats = [
            {
                "id": c["id"],
                "name": c["name"],
                "system_prompt": c["system_prompt"],
                "model": c["model"],
                "settings": c["settings"],
                "policy": c["policy"],
                "created_at": c["created_at"],  # a copy keeps its chats' times, and so their order
            }
            for c in await self.chats.list(sid)
        ]
        spec = {k: s[k] for k in COPIED_FIELDS}
        spec.update(chats=chats, current_chat=s["current_chat"])
        return spec
