"""Operations into tables: how one operation (this device's or another's) changes the materialised
sessions, chats and checkpoints, how this device writes an operation of its own, and how a batch of other
devices' operations is taken in (apply_remote). Everything here runs inside a write transaction, through
the Transaction it is given.

The result does not depend on the order operations arrive in: fields of a session or chat are
last-writer-wins per field by (lamport, device id); a session's end is final; messages are ordered by
(lamport, device id, seq) and de-duplicated by (device id, seq).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from operator import itemgetter

from .connections import Connections
from .errors import Conflict, Invalid, NotFound
from .groupcommit import Transaction
from .ids import case_twin
from .limits import check_imported
from .model import CHAT_FIELDS, JSON_FIELDS, PATCHABLE, RECOUNT_SQL, SESSION_TEXTS, Op, RemoteLog, dumps, row_charge
from .search import insert_messages

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
                value = dumps(v) if k in JSON_FIELDS else v
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
            "policy": b.get("policy") or {},
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


async def save_peer(
    tx: Transaction,
    sid: str,
    head_pk: bytes,
    device_id: str | None = None,
    rev: int | None = None,
    applied_seq: int | None = None,
    last_error: str | None = None,
) -> None:
    await tx.execute(
        "INSERT INTO peers(session_id, head_pk, device_id, rev, applied_seq, last_error) VALUES (?,?,?,?,?,?) "
        "ON CONFLICT(session_id, head_pk) DO UPDATE SET device_id=coalesce(excluded.device_id, device_id), "
        "rev=max(rev, excluded.rev), applied_seq=max(applied_seq, excluded.applied_seq), "
        "last_error=excluded.last_error",
        (sid, head_pk, device_id, rev or 0, applied_seq or 0, last_error),
    )


# Message rows per write transaction of a new session's import: 2,000 hold the writer 50-65 ms here (a
# 100,000-message import in one transaction held it 1.4 s; by 5,000, up to 140 ms when a commit also
# checkpoints the WAL), so local appends to other sessions wait at most about that long meanwhile. The
# whole import takes ~5% longer than in one transaction.
IMPORT_CHUNK = 2_000


async def apply_remote(
    c: Connections,
    sid: str,
    logs: dict[str, RemoteLog],
    *,
    peers: Sequence[dict] = (),
    remote: dict | None = None,
    access: str | None = None,
    event: str = "session.synced",
    own: dict | None = None,
    rejoin: dict | None = None,
    chunk: int = IMPORT_CHUNK,
    new_only: bool = False,
) -> int:
    """Apply other devices' operations and record how far each peer's log has been applied. Returns how
    many were new here.

    Operations other than messages are applied in the global order (Lamport clock, device, seq);
    messages are plain inserts that nothing else reads while applying, so they go in as batches per log.
    Nothing slow may run in here (such as checking proofs): every local append waits meanwhile.
    `own` ({pushed_seq, head_rev, tree}): this device's own log as published in the store is taken in
    too (an import after `rm` or onto a restored key), and the push state continues from it, so no
    sequence number it published is used again.

    `rejoin` ({members_rev, keep, push_again}): a session held here goes over to a share code's
    generation (a device left out of a rekey, given a new code), in the same transaction as its logs:
    the members slot read from that revision (and this device announced in it anew), only the heads in
    `keep` followed from now on, and, with `push_again`, this device's whole log pushed again.

    A session new here with more than `chunk` messages (a long session imported) goes in in several
    write transactions, so that the writer is free between them: the first creates it hidden
    (`importing`, skipped by every read), each next one inserts `chunk` messages, the last one does the
    bookkeeping and shows it. Readers see all of it or nothing. If it fails, it is deleted; a crash
    leaves it hidden, and it is deleted when the database is next opened. Otherwise all of it is
    applied in one transaction.

    `new_only`: an import that found no session of this id here before it fetched the logs; one here now
    (or one whose id differs only in case) arrived meanwhile (`new --id`, another code's or a file's import),
    and may be another conversation under the same id: refused (Conflict), nothing written."""
    if own is None:  # otherwise this device's own log is authoritative
        logs = {d: lg for d, lg in logs.items() if d != c.device_id}
    ops = sorted((op for lg in logs.values() for op in lg.ops), key=lambda o: o.order)
    msgs = [lg.messages for lg in logs.values()]
    chats = sorted(set().union(*(map(itemgetter(1), rows) for rows in msgs)) - {None})
    async with c.transaction() as tx:
        row = await tx.fetchone("SELECT importing FROM sessions WHERE id=?", (sid,))
        if row is not None and row[0]:
            if sid in c.importing:
                raise Conflict(f"session {sid!r} is being imported already; wait for that import to finish")
            # a file's session, hidden until its import ends (a crash's leftovers are gone before the daemon
            # serves): not what a failed import left, and maybe another conversation under this id
            if await tx.fetchone("SELECT 1 FROM file_imports WHERE session_id=?", (sid,)):
                raise Conflict(
                    f"session {sid!r} is being imported from a file on this device; wait for that import to"
                    f" finish, then import the code again (the same session is then taken in as such, a"
                    f" different one refused with what to do)"
                )
            await tx.execute("DELETE FROM sessions WHERE id=?", (sid,))  # what a failed import left
            row = None
        if new_only:
            twin = await case_twin(tx, sid)
            if row is not None or twin is not None:
                raise Conflict(
                    f"session {twin or sid!r} was made on this device (or imported from another code or a file)"
                    f" while this import of session {sid!r} was under way, and may be another conversation under"
                    f" this id: nothing was imported; import the code again (the same session is then taken in"
                    f" as such, a different one refused with what to do)"
                )
        if row is not None or sum(map(len, msgs)) <= chunk:
            new = await _apply_logs(tx, sid, ops, msgs, logs, peers=peers, remote=remote, access=access, own=own)
            if rejoin is not None and row is not None:
                await _switch(tx, sid, **rejoin)
            if row is None:  # a session new here: it must fit the limits on active sessions
                await check_imported(tx, c.limits, sid)
            tx.emit({"type": event, "session": sid, "new": new, "chats": chats})
            return new
        new = await _apply_ops(tx, sid, ops)
        await _check_created(tx, sid)
        await tx.execute("UPDATE sessions SET importing=1 WHERE id=?", (sid,))
    c.importing.add(sid)
    try:
        tally = _Tally()
        rows = [rows[i : i + chunk] for rows in msgs for i in range(0, len(rows), chunk)]
        for part in rows:
            async with c.transaction() as tx:
                new += await _insert_messages(tx, [part], tally)
            if os.environ.get("SESSIOND_CRASH_AT") == "import.chunk":  # a fault hook for the crash tests
                os._exit(137)
        async with c.transaction() as tx:
            await _finish(tx, sid, logs, tally, peers=peers, remote=remote, access=access, own=own)
            await check_imported(tx, c.limits, sid)
            await tx.execute("UPDATE sessions SET importing=0 WHERE id=?", (sid,))
            tx.emit({"type": event, "session": sid, "new": new, "chats": chats})
    except BaseException:
        try:
            async with c.transaction() as tx:
                await tx.execute("DELETE FROM sessions WHERE id=? AND importing=1", (sid,))
        finally:
            c.importing.discard(sid)
        raise
    c.importing.discard(sid)
    return new


class _Tally:
    """What the message batches of one apply added: the latest Lamport clock and time, and the tokens
    (None once some rows were here already: the session's total is then counted again)."""

    def __init__(self) -> None:
        self.max_lam, self.max_t = 0, 0.0
        self.tokens: int | None = 0


async def _apply_ops(tx: Transaction, sid: str, ops: list[Op]) -> int:
    new = 0
    for op in ops:
        if await tx.execute(
            "INSERT OR IGNORE INTO ops(session_id, device_id, seq, lamport, kind, body, created_at)"
            " VALUES (?,?,?,?,?,?,?)",
            (sid, op.device_id, op.seq, op.lamport, op.kind, dumps(op.body), op.created_at),
        ):
            new += 1
            await apply_op(tx, op)
    return new


async def _insert_messages(tx: Transaction, msgs: list[list[tuple]], tally: _Tally) -> int:
    new = 0
    for rows in msgs:
        if not rows:
            continue
        inserted = await insert_messages(tx, rows, or_ignore=True)
        new += inserted
        if tally.tokens is not None and inserted == len(rows):
            tally.tokens += sum(map(row_charge, map(itemgetter(7), rows), map(itemgetter(9), rows)))
        else:
            tally.tokens = None
        tally.max_lam = max(tally.max_lam, max(map(itemgetter(4), rows)))
        tally.max_t = max(tally.max_t, max(map(itemgetter(8), rows)))
    return new


async def _check_created(tx: Transaction, sid: str) -> None:
    if await tx.fetchone("SELECT 1 FROM sessions WHERE id=?", (sid,)) is None:
        raise Invalid(f"the shared logs of {sid!r} do not create the session (no session.create)")


async def _apply_logs(
    tx: Transaction,
    sid: str,
    ops: list[Op],
    msgs: list[list[tuple]],
    logs: dict[str, RemoteLog],
    *,
    peers: Sequence[dict],
    remote: dict | None,
    access: str | None,
    own: dict | None,
) -> int:
    new = await _apply_ops(tx, sid, ops)
    tally = _Tally()
    new += await _insert_messages(tx, msgs, tally)
    await _check_created(tx, sid)
    await _finish(tx, sid, logs, tally, peers=peers, remote=remote, access=access, own=own)
    return new


async def _switch(tx: Transaction, sid: str, *, members_rev: int, keep: Sequence[bytes], push_again: bool) -> None:
    """A rejoin's switch to a code's generation (apply_remote's `rejoin`)."""
    await tx.execute("UPDATE remotes SET members_rev=?, announced=0 WHERE session_id=?", (members_rev, sid))
    await tx.execute(
        f"DELETE FROM peers WHERE session_id=? AND head_pk NOT IN ({','.join('?' * len(keep))})", (sid, *keep)
    )
    if push_again:  # under the new key, its head's revision going on from where it is
        await tx.execute("UPDATE sync_state SET pushed_seq=0, tree=NULL, pending=NULL WHERE session_id=?", (sid,))


async def _finish(
    tx: Transaction,
    sid: str,
    logs: dict[str, RemoteLog],
    tally: _Tally,
    *,
    peers: Sequence[dict],
    remote: dict | None,
    access: str | None,
    own: dict | None,
) -> None:
    """The bookkeeping after an apply's rows: the session's clock, activity and tokens, how far each
    log is here, what this device may do, where the session syncs, and whom it follows."""
    max_lam, max_t, added_tokens = tally.max_lam, tally.max_t, tally.tokens
    if max_lam:
        # every row new (the usual pull): add their tokens; a sum over the whole session
        # would hold the write lock for tens of milliseconds on a long one
        await tx.execute(
            "UPDATE sessions SET lamport=max(lamport, ?), last_activity=max(last_activity, ?),"
            " tokens_used=" + ("tokens_used+?" if added_tokens is not None else RECOUNT_SQL) + " WHERE id=?",
            (max_lam, max_t, added_tokens if added_tokens is not None else sid, sid),
        )
    for device, lg in logs.items():
        if len(lg):
            await tx.execute(
                "INSERT INTO logs(session_id, device_id, last_seq) VALUES (?,?,?) ON CONFLICT("
                "session_id, device_id) DO UPDATE SET last_seq=max(last_seq, excluded.last_seq)",
                (sid, device, lg.last_seq),
            )
    if access is not None:
        await tx.execute("UPDATE sessions SET access=? WHERE id=?", (access, sid))
    if remote is not None:
        await tx.execute(
            "INSERT INTO remotes(session_id, store_url, announce_pk, members_rev) VALUES (?,?,?,?) "
            "ON CONFLICT(session_id) DO UPDATE SET store_url=excluded.store_url, "
            "announce_pk=excluded.announce_pk, members_rev=max(members_rev, excluded.members_rev)",
            (sid, remote["store_url"], remote["announce_pk"], remote.get("members_rev", 0)),
        )
        await tx.execute("INSERT OR IGNORE INTO sync_state(session_id) VALUES (?)", (sid,))
    if own is not None:
        await tx.execute(
            "INSERT INTO sync_state(session_id, pushed_seq, head_rev, tree, rekey_claims) VALUES (?,?,?,?,?) "
            "ON CONFLICT(session_id) DO UPDATE SET pushed_seq=max(pushed_seq, excluded.pushed_seq), "
            "head_rev=max(head_rev, excluded.head_rev), "
            "tree=CASE WHEN excluded.pushed_seq > pushed_seq THEN excluded.tree ELSE tree END, "
            "pending=CASE WHEN excluded.pushed_seq > pushed_seq THEN NULL ELSE pending END, "
            "rekey_claims=coalesce(excluded.rekey_claims, rekey_claims) "
            "WHERE pushed_seq < excluded.pushed_seq OR head_rev < excluded.head_rev",
            (sid, own["pushed_seq"], own["head_rev"], own["tree"], own.get("rekey_claims")),
        )
    for p in peers:
        await save_peer(tx, sid, **p)
