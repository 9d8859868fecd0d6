"""Operations into tables: how one operation (this device's or another's) changes the materialised
sessions, chats and checkpoints, how this device writes an operation of its own (a batch of other devices'
operations is taken in by applyremote.py's apply_remote). Everything here runs inside a write transaction, through
the Transaction it is given.

The result does not depend on the order operations arrive in: fields of a session or chat are
last-writer-wins per field by (lamport, device id); a session's end is final; messages are ordered by
(lamport, device id, seq) and de-duplicated by (device id, seq).
"""

from __future__ import annotations

import json

from . import pulledpolicy
from .errors import NotFound
from .groupcommit import Transaction
from .model import CHAT_FIELDS, JSON_FIELDS, PATCHABLE, SESSION_TEXTS, Op, dumps

# A checkpoint's fields its table has columns for; a newer sessiond's others are kept in its `more`
CHECKPOINT_KEYS = frozenset(
    ("session", "device", "number", "hash", "tokens", "messages", "frontier", "created_at", "pk", "signature", "v")
)


def stamp_newer(stamp: list | tuple, old: list | None) -> bool:
    return old is None or tuple(stamp) > tuple(old)


async def next_seq(tx: Transaction, device_id: str, sid: str, lamport: int, n: int = 1) -> tuple[int, int]:
    """Reserve `n` sequence numbers of this device's log and return (first seq, first lamport)."""
    row = await tx.fetchone("SELECT last_seq FROM logs WHERE session_id=? AND device_id=?", (sid, device_id))
    first = (row[0] if row else 0) + 1
    await tx.execute(
        "INSERT INTO logs(session_id, device_id, last_seq) VALUES (?,?,?) "
        "ON CONFLICT(session_id, device_id) DO UPDATE SET last_seq=excluded.last_seq",
        (sid, device_id, first + n - 1),
    )
    return first, lamport + 1


async def local_op(tx: Transaction, device_id: str, sid: str, lamport: int, kind: str, body: dict, t: float) -> Op:
    """Write one operation of this device's own (the next of its log) and apply it."""
    seq, lam = await next_seq(tx, device_id, sid, lamport)
    op = Op(sid, device_id, seq, lam, kind, body, t)
    await tx.execute(
        "INSERT INTO ops(session_id, device_id, seq, lamport, kind, body, created_at) VALUES (?,?,?,?,?,?,?)",
        (sid, op.device_id, op.seq, op.lamport, kind, dumps(body), t),
    )
    await apply_op(tx, op)
    return op


async def _early_chat_updates(tx: Transaction, sid: str) -> dict[str, list]:
    """The chat.update operations of session `sid` held in `ops`, by chat: those that arrived before their
    chat's creation (another device's log read first), for a session.create to apply to its chats. One look
    for all of its chats: each look reads every operation of the session, this session.create's own among them,
    which holds every chat's system prompt (a session file of 500 chats of 100,000-character prompts took 37 s
    to import, a look per chat, with the daemon answering nothing meanwhile)."""
    out: dict[str, list] = {}
    for r in await tx.fetchall(
        "SELECT device_id, seq, lamport, body, created_at, json_extract(body, '$.chat') FROM ops"
        " WHERE session_id=? AND kind='chat.update'",
        (sid,),
    ):
        out.setdefault(r[5], []).append(r)
    return out


async def apply_op(tx: Transaction, op: Op, early: list | None = None) -> None:
    """Materialise one non-message operation (inside a transaction).
    Idempotent and order-independent: fields are last-writer-wins by (lamport, device id). `early`: for a
    chat.create of a session.create, its chat's updates that came before it (_early_chat_updates), looked up
    once for all the session's chats (and the session's clock and activity, below, set once by the session.create:
    an update of the session's row rewrites all of it, its system prompt of megabytes too)."""
    b = op.body
    stamp = [op.lamport, op.device_id]
    if op.kind == "session.create":
        fields = {k: b.get(k) for k in ("user", "name", "system_prompt", "model", "expires_at", "current_chat")}
        for k in JSON_FIELDS:
            fields[k] = dumps(b.get(k, [] if k in ("tags", "initial_messages") else {}))
        fields["policy"] = dumps(pulledpolicy.kept(b.get("policy", {})))  # (as the API takes it: pulledpolicy.py)
        fields["status"] = "active"
        stamps = dict.fromkeys(fields, stamp)
        await tx.execute(
            "INSERT INTO sessions(id, user, name, model, settings, status, current_chat, created_at, last_activity,"
            " expires_at, lamport, stamps, policy, provenance) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(id) DO NOTHING",
            (
                op.session_id,
                fields["user"],
                fields["name"],
                fields["model"],
                fields["settings"],
                "active",
                fields["current_chat"],
                b.get("created_at", op.created_at),
                op.created_at,
                fields["expires_at"],
                op.lamport,
                dumps(stamps),
                fields["policy"],
                dumps(b["provenance"]) if b.get("provenance") else None,
            ),
        )
        await tx.execute(  # (its texts out of the row every append rewrites: migration 21)
            f"INSERT INTO session_texts(session_id, {', '.join(SESSION_TEXTS)}) VALUES (?{',?' * len(SESSION_TEXTS)})"
            " ON CONFLICT(session_id) DO NOTHING",
            (op.session_id, *(fields[k] for k in SESSION_TEXTS)),
        )
        chats = b.get("chats", [])
        pending = await _early_chat_updates(tx, op.session_id) if chats else {}
        for chat in chats:
            chat_op = Op(op.session_id, op.device_id, op.seq, op.lamport, "chat.create", chat, op.created_at)
            await apply_op(tx, chat_op, pending.get(chat.get("id"), []))
    elif op.kind == "session.update":
        row = await tx.fetchone("SELECT stamps, status FROM sessions WHERE id=?", (op.session_id,))
        if row is None:
            raise NotFound(f"no session {op.session_id!r} to update")
        stamps = json.loads(row["stamps"])
        current_status = row["status"]
        sets, args, texts = [], [], {}
        for k, v in b.items():
            if k not in PATCHABLE and k not in ("status", "current_chat"):
                continue  # fields from a newer version are ignored, not fatal
            if k == "status" and "ended" in (v, current_status):
                # an end is final, as it is locally: a pause or resume made concurrently elsewhere
                # does not undo it, whichever arrives first (of two ends, the later one's stamp stays)
                if v == "ended" and (current_status != "ended" or stamp_newer(stamp, stamps.get(k))):
                    stamps[k], current_status = stamp, "ended"
                    sets.append("status=?")
                    args.append(v)
                continue
            if stamp_newer(stamp, stamps.get(k)):
                stamps[k] = stamp
                value = dumps(pulledpolicy.kept(v) if k == "policy" else v) if k in JSON_FIELDS else v
                if k in SESSION_TEXTS:
                    texts[k] = value
                else:
                    sets.append(f"{k}=?")
                    args.append(value)
        if texts:
            await tx.execute(
                f"UPDATE session_texts SET {', '.join(f'{k}=?' for k in texts)} WHERE session_id=?",
                (*texts.values(), op.session_id),
            )
        if sets or texts:
            sets.append("stamps=?")
            args.append(dumps(stamps))
            await tx.execute(f"UPDATE sessions SET {', '.join(sets)} WHERE id=?", (*args, op.session_id))
    elif op.kind == "chat.create":
        # A chat created on two devices at once under one id is one chat: a creation writes each of
        # its fields at its stamp, like an update, so the later creation by (lamport, device) wins
        # them whichever arrives first (and later updates win over both).
        fields = {
            "name": b.get("name"),
            "system_prompt": b.get("system_prompt"),
            "model": b.get("model"),
            "settings": b.get("settings") or {},
            "policy": pulledpolicy.kept(b.get("policy")),
            "created_at": b.get("created_at", op.created_at),
        }
        created = await tx.execute(
            "INSERT INTO chats(session_id, id, name, model, settings, created_at, stamps, policy)"
            " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
            (
                op.session_id,
                b["id"],
                fields["name"],
                fields["model"],
                dumps(fields["settings"]),
                fields["created_at"],
                dumps(dict.fromkeys(fields, stamp)),
                dumps(fields["policy"]),
            ),
        )
        if created:
            await set_chat_prompt(tx, op.session_id, b["id"], fields["system_prompt"])
            # updates of this chat that arrived before its creation (another device's log read
            # first) were kept in `ops` with nowhere to go: apply them now
            updates = early
            if updates is None:
                updates = await tx.fetchall(
                    "SELECT device_id, seq, lamport, body, created_at FROM ops WHERE"
                    " session_id=? AND kind='chat.update' AND json_extract(body, '$.chat')=?",
                    (op.session_id, b["id"]),
                )
            for r in updates:
                await update_chat(tx, Op(op.session_id, r[0], r[1], r[2], "chat.update", json.loads(r[3]), r[4]))
        else:
            await update_chat(tx, op, {"chat": b["id"], **fields}, (*CHAT_FIELDS, "created_at"))
    elif op.kind == "chat.update":
        await update_chat(tx, op)
    elif op.kind == "checkpoint.add":
        await tx.execute(
            "INSERT OR IGNORE INTO checkpoints(session_id, device_id, number, hash, tokens, messages, frontier,"
            " created_at, pk, signature, v, more) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                op.session_id,
                op.device_id,
                b["number"],
                bytes.fromhex(b["hash"]),
                b["tokens"],
                b["messages"],
                dumps(b["frontier"]),
                b["created_at"],
                bytes.fromhex(b["pk"]),
                bytes.fromhex(b["signature"]),
                b.get("v"),  # (none: version 1)
                dumps(more) if (more := {k: x for k, x in b.items() if k not in CHECKPOINT_KEYS}) else None,
            ),
        )
    # Unknown kinds (written by a newer version) are kept in the log and ignored here.
    if early is not None:
        return  # (a chat of a session.create, whose own apply ends so, at the same clock and time: once, not per chat)
    await tx.execute(
        "UPDATE sessions SET lamport=max(lamport, ?), last_activity=max(last_activity, ?) WHERE id=?",
        (op.lamport, op.created_at, op.session_id),
    )


async def update_chat(tx: Transaction, op: Op, body: dict | None = None, keys: tuple = CHAT_FIELDS) -> None:
    """Fields of a chat, last-writer-wins each by (lamport, device id). An update of a chat not (yet)
    here does nothing: the chat's creation applies it when it comes (see chat.create)."""
    b = op.body if body is None else body
    stamp = [op.lamport, op.device_id]
    row = await tx.fetchone("SELECT stamps FROM chats WHERE session_id=? AND id=?", (op.session_id, b.get("chat")))
    if row is None:
        return
    stamps = json.loads(row["stamps"])
    sets, args, changed = [], [], False
    for k, v in b.items():
        if k in keys and stamp_newer(stamp, stamps.get(k)):
            stamps[k], changed = stamp, True
            if k == "system_prompt":  # (out of the chat's row: migration 21)
                await set_chat_prompt(tx, op.session_id, b["chat"], v)
                continue
            sets.append(f"{k}=?, ")
            if k == "policy" and v is not None:
                v = pulledpolicy.kept(v)
            args.append(dumps(v) if k in ("compacted", "policy", "settings") and v is not None else v)
    if changed:
        await tx.execute(
            f"UPDATE chats SET {''.join(sets)}stamps=? WHERE session_id=? AND id=?",
            (*args, dumps(stamps), op.session_id, b["chat"]),
        )


async def set_chat_prompt(tx: Transaction, sid: str, chat: str, prompt: str | None) -> None:
    """A chat's system prompt, kept out of its row (migration 21): a row of `chat_prompts`, none for no prompt."""
    if prompt is None:
        await tx.execute("DELETE FROM chat_prompts WHERE session_id=? AND chat_id=?", (sid, chat))
    else:
        await tx.execute(
            "INSERT INTO chat_prompts(session_id, chat_id, system_prompt) VALUES (?,?,?)"
            " ON CONFLICT(session_id, chat_id) DO UPDATE SET system_prompt=excluded.system_prompt",
            (sid, chat, prompt),
        )
