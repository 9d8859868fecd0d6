"""Sessions: create, read, list, change (what a change may do: changerules.py), delete; and the
session row every other part looks up first (session_row, writable_row). Pause, resume, end and revocation:
statuschanges.py. When a session expires, and the writes its expiry refuses: expiry.py."""

from __future__ import annotations

import builtins
import json
from collections.abc import Awaitable, Callable
from typing import Any

from .activity import most_set_back, stamp
from .apply import local_op
from .changerules import check_status_change, refuse_conversation_change
from .connections import Connections, Row
from .errors import Conflict, LimitReached, NoLongerExpired, NotFound, check_access
from .expiry import expired_for_writes, last_activity, past_expiry, refuse_expired, refuse_if_expiry_ended
from .groupcommit import Transaction
from .headlies import drop_mend
from .ids import case_twin, check_id, held_twin, new_id
from .keptrecords import drop_session_records
from .lifecycle import Released, note_kept_in
from .limits import check_active_limits
from .missedmarks import IMPORT_END_INSERT
from .model import JSON_FIELDS, checkpoint_interval, no_user_sql, now
from .quotalevel import quota_level
from .search import PURGE_IF_INDEXED
from .unknown import no_session

Made = Callable[[Transaction, str], Awaitable[None]]  # a caller's writes in a create's transaction, given its id

# A session's row with its texts, which are kept beside it (migration 21: out of the row an append rewrites)
_COLUMNS = (
    "SELECT s.*, t.system_prompt, coalesce(t.initial_messages, '[]') AS initial_messages,"
    " coalesce(t.metadata, '{}') AS metadata, coalesce(t.tags, '[]') AS tags,"
    " coalesce(t.preferences, '{}') AS preferences FROM "
)
_TEXTS = " LEFT JOIN session_texts t ON t.session_id=s.id"
SESSION_SELECT = _COLUMNS + "sessions s" + _TEXTS
# The sessions with a tag, in the order of their ids: the tag's rows of `session_tags` (migration 26), each session
# looked up by its id (CROSS JOIN: SQLite keeps that order of the loops), as far as the page goes
_TAGGED_SELECT = _COLUMNS + "session_tags g CROSS JOIN sessions s ON s.id=g.session_id" + _TEXTS


async def session_row(q: Any, sid: str, *, importing: bool = False, texts: bool = False) -> Row:
    """The session's row, read through `q` (the committed state, or the transaction you hold). A session
    whose import is under way is not there yet (see apply_remote, and create's file_import), except to
    that import itself (`importing`). `texts`: with its texts beside the row (model.SESSION_TEXTS: its system
    prompt, initial messages, metadata, tags, preferences; session_dict needs them), which may be megabytes: only
    what shows or sends them reads them (a checkpoint, a chat's change, a compaction read the row alone)."""
    sql = (
        SESSION_SELECT + " WHERE s.id=? AND s.importing=?"
        if texts
        else "SELECT * FROM sessions WHERE id=? AND importing=?"
    )
    row = await q.fetchone(sql, (sid, int(importing)))
    if row is None:
        raise await no_session(q, sid)
    return row


async def writable_row(
    q: Any, sid: str, c: Connections, *, ending: bool = False, importing: bool = False, texts: bool = False
) -> Row:
    """The row of a session this device may change: not a read-only import nor one rekeyed without this
    device (`access` read, revoked), and not past its expiry or
    idle timeout (unless `ending` it: that is what its expiry does; a shared one's idle end waits for a pull:
    expired_for_writes). `importing`: of one still hidden.
    `texts`: as session_row's."""
    row = await session_row(q, sid, importing=importing, texts=texts)
    check_access(sid, row["access"])
    if not ending and await expired_for_writes(q, sid, row, now()):
        await refuse_expired(c, q, sid, row)
    return row


def session_dict(row: Row) -> dict:
    d = {
        k: row[k]
        for k in (
            "id",
            "user",
            "name",
            "system_prompt",
            "model",
            "status",
            "current_chat",
            "created_at",
            "last_activity",
            "expires_at",
            "access",
            "tokens_used",
        )
    }
    d["last_activity"] = last_activity(row)  # (as its idleness is judged: real time since, storage/activity.py)
    d["provenance"] = json.loads(row["provenance"]) if row["provenance"] else None
    for k in JSON_FIELDS:
        d[k] = json.loads(row[k])
    return d


class Sessions:
    def __init__(self, c: Connections):
        self.c = c

    async def create(
        self, spec: dict, *, file_import: bool = False, active: bool = True, also: Made | None = None
    ) -> dict:
        """A new session. `file_import`: made by an import from a file, listed as such in its creating
        transaction until `end_file_import` (a crash before that: `unfinished_file_imports` names it), and
        hidden meanwhile as an import from a share code is (`importing`: not listed, searched, counted in
        statistics nor pushed; no event), so that the file's sessions appear all at once, whole, or not at
        all; the import's own appends reach it (Messages.append's `importing`). `active=False`: one such
        import that ends paused or ended (its file's status), which the active-session limits do not
        count, as they do not count a session paused or ended here (resuming it checks them). `also`: the caller's
        own writes of the session made (given its id), in its creating transaction (as Messages.append's)."""
        sid = spec.get("id")
        sid = check_id(sid, "session id") if sid is not None else new_id()
        t = stamp()  # (now(), read before the wait for the writer: its clock steps counted with it, activity.py)
        chats = spec.get("chats") or [
            {"id": "main", "name": "main", "system_prompt": None, "model": None, "settings": {}}
        ]
        chats = [{**c, "created_at": c.get("created_at") or t} for c in chats]  # a clone's or fork's: the original
        body = {k: spec.get(k) for k in ("user", "name", "system_prompt", "model", "expires_at")}
        for k in JSON_FIELDS:
            if k in spec:
                body[k] = spec[k]
        if spec.get("provenance"):
            body["provenance"] = spec["provenance"]
        # (a session file's own creation time, which its import keeps; the import's time is its last activity)
        body.update(
            created_at=spec.get("created_at") or t, current_chat=spec.get("current_chat") or chats[0]["id"], chats=chats
        )
        async with self.c.transaction() as tx:
            held = await tx.fetchone("SELECT importing FROM sessions WHERE id=?", (sid,))
            if held is not None and held[0]:  # hidden (404 by its id) until its import ends: which may free the id
                raise Conflict(
                    f"session {sid!r} is being imported on this device (from a share code or a file); wait for that"
                    f" import to end (one that fails frees the id), or choose another id or omit it",
                    reason="importing",
                )
            if held is not None:
                raise Conflict(
                    f"a session with id {sid!r} already exists; choose another id or omit it", reason="exists"
                )
            twin = await held_twin(tx, sid)
            if twin is not None and twin[1]:
                raise Conflict(importing_twin_message(sid, twin[0]) + ", or choose another id", reason="importing")
            if twin is not None:
                raise Conflict(case_twin_message(sid, twin[0]) + "; choose another id or omit it", reason="case_twin")
            if active:
                await self._check_limits(tx, spec.get("user"))
            cap = self.c.limits.get("max_chats_per_session")
            if cap and len(chats) > cap:  # made with its chats (a clone, a fork, a session file): as `chat new`
                raise LimitReached(
                    f"session {sid!r} would have {len(chats)} chats, more than max_chats_per_session ({cap})",
                    limit="max_chats_per_session",
                    value=cap,
                )
            await local_op(tx, self.c.device_id, sid, 0, "session.create", body, t)
            await tx.execute("INSERT INTO sync_state(session_id) VALUES (?)", (sid,))
            if file_import:
                await tx.execute("INSERT INTO file_imports(session_id) VALUES (?)", (sid,))
                await tx.execute("UPDATE sessions SET importing=1 WHERE id=?", (sid,))
            else:
                tx.emit({"type": "session.created", "session": sid})
            if also is not None:
                await also(tx, sid)
        return session_dict(await session_row(self.c.committed, sid, importing=file_import, texts=True))

    async def end_file_import(self, sids: builtins.list[str], finish: dict[str, dict] | None = None) -> None:
        """The import from a file that made `sids` is done: all of it stays, and shows (one transaction).
        Each is announced as created then (which pushes it), due a checkpoint if its messages passed its
        checkpoint interval, as their appends would have made it. `finish`: what a session's file gives it
        beyond its messages, set in that transaction over them, so that it shows only as it was: `cuts`,
        its chats' compaction cutoffs ({chat: [lamport, device, seq]}), and `status`, when not active (its
        messages went in while it was); one ended is due its final checkpoint, as `end` makes one, and so is
        one whose file held checkpoints (`checkpoint`: the source's proofs, which do not verify here). One
        past its expiry (a file of an expired session) is ended then, as a write that meets an expired
        session ends it (Connections.on_expired)."""
        expired = []
        finish = finish or {}
        async with self.c.transaction() as tx:
            for sid in sids:
                row = await session_row(tx, sid, importing=True)
                status = finish.get(sid, {}).get("status", "active")
                if status != "ended" and past_expiry(row, now()):
                    expired.append(sid)
                lamport = row["lamport"]
                for chat, cut in finish.get(sid, {}).get("cuts", {}).items():
                    body = {"chat": chat, "compacted": cut}
                    lamport = (await local_op(tx, self.c.device_id, sid, lamport, "chat.update", body, now())).lamport
                if status != "active":
                    await local_op(tx, self.c.device_id, sid, lamport, "session.update", {"status": status}, now())
                await tx.execute("UPDATE sessions SET importing=0 WHERE id=?", (sid,))
                interval = checkpoint_interval(json.loads(row["policy"]))
                ev: dict[str, Any] = {"type": "session.created", "session": sid}
                if row["tokens_used"] >= interval:  # its end noted, as an append's that passed a mark (missedmarks.py)
                    await tx.execute(IMPORT_END_INSERT, (sid, self.c.device_id))
                if row["tokens_used"] >= interval or status == "ended" or finish.get(sid, {}).get("checkpoint"):
                    ev["checkpoint_due"] = True
                tx.emit(ev)
            await tx.executemany("DELETE FROM file_imports WHERE session_id=?", [(sid,) for sid in sids])
        for sid in expired:
            if self.c.on_expired is not None:
                self.c.on_expired(sid)

    async def unfinished_file_imports(self) -> builtins.list[str]:
        """Sessions of an import from a file that did not end (a crash): to be deleted, all of them."""
        rows = await self.c.committed.fetchall("SELECT session_id FROM file_imports ORDER BY session_id")
        return [r[0] for r in rows]

    async def _check_limits(self, tx: Any, user: str | None, *, daemon: bool = True) -> None:
        await check_active_limits(tx, self.c.limits, user, daemon=daemon)

    async def case_twin(self, sid: str) -> str | None:
        return await case_twin(self.c.committed, sid)

    async def held_twin(self, sid: str) -> tuple[str, bool] | None:
        return await held_twin(self.c.committed, sid)

    async def imported_from(self, fields: dict[str, str]) -> dict[tuple[str, str], builtins.list[str]]:
        """The sessions imports from files made of other apps' conversations, for the sources `fields`
        names (source -> the metadata field holding its conversation's id): {(source, conversation id):
        the shown sessions made of it, oldest first}, counting only sessions as the import made them (no
        provenance: not a fork or clone). One pass over the sessions, however many conversations a file
        holds (a lookup per conversation read every session's metadata once each)."""
        if not fields:
            return {}
        marks = ", ".join("?" for _ in fields)
        rows = await self.c.committed.fetchall(
            "SELECT s.id, json_extract(t.metadata, '$.source') AS source, t.metadata FROM sessions s"
            " JOIN session_texts t ON t.session_id=s.id"
            " WHERE NOT s.importing AND s.provenance IS NULL AND json_valid(t.metadata)"
            f" AND json_extract(t.metadata, '$.source') IN ({marks}) ORDER BY s.created_at, s.id",
            tuple(fields),
        )
        out: dict[tuple[str, str], builtins.list[str]] = {}
        for sid, source, metadata in rows:
            value = json.loads(metadata).get(fields[source])
            if isinstance(value, str):
                out.setdefault((source, value), []).append(sid)
        return out

    async def forks_of(self, sids: builtins.list[str], sources: builtins.list[str]) -> dict[str, builtins.list[dict]]:
        """The shown forks of these sessions (provenance kind fork naming one of them) whose metadata names one
        of these `source`s, each {id, name, metadata}, oldest first: {session: its forks}. One pass over such
        forks, as imported_from's. (A re-import looks among them for the forks it made of a ChatGPT
        conversation's branches: daemon/reimports.py.)"""
        if not sids or not sources:
            return {}
        marks = ", ".join("?" for _ in sources)
        rows = await self.c.committed.fetchall(
            "SELECT s.id, s.name, t.metadata, json_extract(s.provenance, '$.session') FROM sessions s"
            " JOIN session_texts t ON t.session_id=s.id"
            " WHERE NOT s.importing AND s.provenance IS NOT NULL AND json_valid(s.provenance)"
            " AND json_valid(t.metadata) AND json_extract(s.provenance, '$.kind') = 'fork'"
            f" AND json_extract(t.metadata, '$.source') IN ({marks}) ORDER BY s.created_at, s.id",
            tuple(sources),
        )
        wanted = set(sids)
        out: dict[str, builtins.list[dict]] = {}
        for sid, name, metadata, source in rows:
            if source in wanted:
                out.setdefault(source, []).append({"id": sid, "name": name, "metadata": json.loads(metadata)})
        return out

    async def get(self, sid: str, *, counts: bool = False) -> dict:
        q = self.c.committed
        d = session_dict(await session_row(q, sid, texts=True))
        if counts:
            # the messages are counted by trigger, per chat (storage/chatstats.py: a count(*) of the index took
            # ~7 ms for 100,000 messages); the token total is kept in the session row by every insert
            d["message_count"] = (
                await q.fetchall("SELECT coalesce(sum(messages), 0) FROM chat_tokens WHERE session_id=?", (sid,))
            )[0][0]
            d["tokens"] = d["tokens_used"]
            d["chat_count"] = (await q.fetchall("SELECT count(*) FROM chats WHERE session_id=?", (sid,)))[0][0]
        return d

    async def list(
        self,
        *,
        user: str | None = None,
        no_user: bool = False,
        status: str | None = None,
        tag: str | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> list[dict]:
        """`no_user`: the sessions with no user, none set or an empty one (an older sessiond stored it so)."""
        where, args = ["NOT s.importing"], []
        select, order = SESSION_SELECT, "s.id"
        if tag is not None:
            select, order = _TAGGED_SELECT, "g.session_id"
            where.append("g.tag=?")
            args.append(tag)
        if user is not None:
            where.append("s.user=?")
            args.append(user)
        if no_user:
            where.append(no_user_sql("s"))
        if status is not None:
            where.append("s.status=?")
            args.append(status)
        if after is not None:
            where.append(f"{order}>?")
            args.append(after)
        sql = f"{select} WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?"
        return [session_dict(r) for r in await self.c.committed.fetchall(sql, (*args, limit))]

    async def ids(self, *, hidden: bool = False) -> builtins.list[str]:  # `list` here is the method above
        """The sessions here; `hidden`: with those an import is still writing."""
        where = "" if hidden else " WHERE NOT importing"
        return [r[0] for r in await self.c.committed.fetchall(f"SELECT id FROM sessions{where} ORDER BY id")]

    async def update(self, sid: str, fields: dict | Callable[[dict], dict], *, event: str = "session.updated") -> dict:
        """Change a session. `fields`: the fields to write, or a function of the session as it is that gives
        them (a PATCH: daemon/validate.session_patch), called in the write transaction so that a merge of
        settings or policy starts from what is stored, not from what another change is about to replace."""
        ending = not callable(fields) and fields.get("status") == "ended"  # (an expiry's end, or `end`)
        expiring = not callable(fields) and ending and "expired_at" in fields  # (an expiry's end)
        async with self.c.transaction() as tx:
            row = await writable_row(tx, sid, self.c, ending=ending, texts=True)
            if expiring and row["status"] != "ended" and not past_expiry(row, now()):
                # an expiry's end of one written to since its expiry was found (a write taken meanwhile: a shared
                # one's idle end waits for a pull), looked at in this transaction: no write commits in between
                raise NoLongerExpired(f"session {sid} was written to since it expired: not ended", reason="not_expired")
            if row["status"] == "ended" and (callable(fields) or "status" not in fields):
                # a change of its fields (a PATCH, a switch of chat) to a session its expiry ended: refused as
                # a message to it is, `expired` (an expired session takes no more changes); one ended by hand is
                # filed as its owner likes (a name, tags). Status changes: below
                await refuse_if_expiry_ended(tx, sid, row)
            if callable(fields):
                fields = fields(session_dict(row))
            if row["status"] == "ended" and "status" not in fields:
                refuse_conversation_change(sid, session_dict(row), fields)
            if "status" in fields:  # checked against the status as committed: an end meanwhile is final
                if fields["status"] == row["status"] and set(fields) <= {"status", "expired_at"}:
                    return session_dict(row)  # (two pauses at once: the second changes nothing)
                if row["status"] == "ended" and fields["status"] != "ended":  # (one its expiry ended: said so)
                    await refuse_if_expiry_ended(tx, sid, row)
                check_status_change(sid, row["status"], fields["status"])
            if fields.get("status") == "active" and row["status"] != "active":
                # a paused session does not count as active: resuming it must fit the limits a new one
                # would, checked in this transaction so that two resumes at once cannot both pass
                await self._check_limits(tx, row["user"])
            elif row["status"] == "active" and fields.get("user", row["user"]) != row["user"]:
                # an active session given to another user is one more of theirs
                await self._check_limits(tx, fields["user"], daemon=False)
            if "current_chat" in fields and not await tx.fetchone(
                "SELECT 1 FROM chats WHERE session_id=? AND id=?", (sid, fields["current_chat"])
            ):
                raise NotFound(f"session {sid!r} has no chat {fields['current_chat']!r} (see `sessiond chat ls`)")
            level = await quota_level(tx, sid) if "policy" in fields else None
            await local_op(tx, self.c.device_id, sid, row["lamport"], "session.update", fields, now())
            ev = {"type": event, "session": sid, "fields": sorted(fields)}
            if level is not None and (moved := await quota_level(tx, sid)) != level:
                ev["quota_level"] = (
                    moved  # (a change of the quota that moved its level: an app is told, as by an append)
                )
            if "current_chat" in fields:  # (a switch: which chat is current now)
                ev["chat"] = fields["current_chat"]
            tx.emit(ev)
            if ending:
                self.c.hold_commit("commit.end")  # (the tests hold an end's commit here)
        return await self.get(sid)

    async def delete(
        self,
        sid: str,
        *,
        idle_before: float | None = None,
        head_pk: bytes | None = None,
        busy: Callable[[str], bool] | None = None,
        keep_objects: bool | frozenset[bytes] = False,
        kept: dict | None = None,
        let_go: tuple[str, frozenset[bytes]] | None = None,
        holding_only: tuple[int, int] | None = None,
    ) -> bool:
        """Delete a session, or one an import from a file is still writing (its rollback, or the next
        start's after a crash). `idle_before` (a clean-up's): only if its last activity is still before then,
        and `busy` (the clean-up's too: a model answering in it) says it is not, both looked at in the
        deleting transaction: a session written to, or whose model began answering, since the clean-up
        listed it stays.
        The kept IPNS records of the heads it follows go with it, this device's own head's (`head_pk`) too.
        `keep_objects`: the gc candidates of its logs (`released`) are forgotten, left in the store for good (a
        members slot of the devices that kept it may pin this device's log as a rekey froze it: sync/frozen.py
        own_log_frozen): all of them (True), or those of these hashes (what that slot pins: sync/gc.py
        kept_at_delete), and `kept` ({store, objects, why}) noted for `sessiond gc` to name (lifecycle.note_kept_in).
        `let_go` (a store's URL, hashes): objects of its log in that store noted as gc candidates (a session no
        other device can read: sync/unshared.py). `holding_only` (the lamports, first and last, of the messages a
        session an OpenAI request made was made for: its question): only if nothing else was written to it since it
        was made, before them or after them, nor was it shared (WRITTEN_BESIDE).
        Whether it was deleted."""
        async with self.c.transaction() as tx:
            shown = await tx.fetchone("SELECT 1 FROM file_imports WHERE session_id=?", (sid,)) is None
            if shown:
                row = await session_row(tx, sid)
                if idle_before is not None and last_activity(row) >= idle_before:
                    return False
                if busy is not None and busy(sid):
                    return False
                if holding_only is not None and await tx.fetchone(WRITTEN_BESIDE, (sid, *holding_only, sid, sid)):
                    return False
            await tx.execute(PURGE_IF_INDEXED, (sid,))
            await drop_session_records(tx, sid, head_pk)
            await drop_mend(tx, sid)
            if keep_objects is True:
                await tx.execute("DELETE FROM released WHERE session_id=?", (sid,))
            elif keep_objects:
                rows = [(sid, h) for h in keep_objects]
                await tx.executemany("DELETE FROM released WHERE session_id=? AND hash=?", rows)
            if kept is not None:
                await note_kept_in(tx, sid, kept)
            if let_go is not None:
                await Released.add_in(tx, let_go[0], sid, let_go[1])
            await tx.execute("DELETE FROM sessions WHERE id=?", (sid,))
            if shown:  # (one never announced goes unannounced)
                tx.emit({"type": "session.deleted", "session": sid})
            self.c.hold_commit("commit.delete")  # (the tests hold the delete's commit here)
        self.c.deleted()  # and out of the WAL's old frames, and the search index's words, soon
        return True

    async def exists(self, sid: str) -> bool:
        """Whether the session is on this device (its import done): the row's key alone, and no refusal made for a
        miss (get's names the session likely meant, unknown.py: a scan of every session, for a person to read)."""
        return await self.c.committed.fetchone("SELECT 1 FROM sessions WHERE id=? AND importing=0", (sid,)) is not None

    async def access(self, sid: str) -> str:
        """What this device may do in the session (its `access`), from its row alone (not its texts)."""
        return (await session_row(self.c.committed, sid))["access"]

    async def older_than(self, t: float) -> builtins.list[dict]:
        """The sessions whose last activity (as judged: storage/activity.py) is before `t`."""
        rows = await self.c.committed.fetchall(
            "SELECT id, name, status, last_activity FROM sessions WHERE last_activity < ? AND NOT importing"
            " ORDER BY id",
            (t + most_set_back(),),  # (a stamp of this run judged before `t` after a step back)
        )
        return [{**dict(r), "last_activity": judged} for r in rows if (judged := last_activity(r)) < t]


# What was written to a session beside its making and the messages of the lamports given (a message, an operation:
# not a checkpoint the daemon made of what was there), or its sharing (Sessions.delete's `holding_only`). Beside them,
# not after them: its id is known from its making on (`sessiond ls`, the session.created event), and another app's
# note may be written before the request that made it records its question (which commits while the model thinks)
WRITTEN_BESIDE = (
    "SELECT 1 FROM messages WHERE session_id=? AND lamport NOT BETWEEN ? AND ?"
    " UNION ALL SELECT 1 FROM ops WHERE session_id=? AND kind NOT IN ('session.create', 'checkpoint.add')"
    " UNION ALL SELECT 1 FROM remotes WHERE session_id=? LIMIT 1"
)


def case_twin_message(sid: str, twin: str) -> str:
    return (
        f"session {twin!r} already exists on this device, and {sid!r} differs from it only in case: on a"
        f" case-insensitive disk (macOS, Windows) the two would share one key file"
    )


def importing_twin_message(sid: str, twin: str) -> str:
    """A case twin being imported: hidden (404 by its id) until its import ends, which frees its id if it fails."""
    return (
        f"session {twin!r} is being imported on this device (from a share code or a file), and {sid!r} differs"
        f" from it only in case (on a case-insensitive disk the two would share one key file): wait for that"
        f" import to end (one that fails frees the id)"
    )
