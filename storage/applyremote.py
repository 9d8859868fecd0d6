"""Other devices' operations into tables: a batch of them taken in at an import or a pull (apply_remote), in
one transaction with the peer's bookkeeping (save_peer), each through storage/apply.py's apply_op, so that the
result does not depend on the order they arrive in."""

from __future__ import annotations

import os
from collections.abc import Sequence
from operator import itemgetter
from typing import TypedDict, Unpack

from .apply import apply_op
from .connections import Connections
from .errors import Conflict, Invalid
from .groupcommit import Transaction
from .ids import case_twin
from .limits import check_imported
from .model import RECOUNT_SQL, Op, RemoteLog, dumps, now, row_charge
from .quotalevel import is_quota, quota_level, quota_of, warning_level
from .search import insert_messages
from .testhooks import pause_for_tests


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


class ApplyOptions(TypedDict, total=False):
    """apply_remote's keyword options, typed once (PEP 692) for it and for Database.apply_remote, which
    forwards them: a misspelled or mistyped keyword at a call site is a type error. Each one's default is
    where apply_remote reads it."""

    peers: Sequence[dict]  # peers rows to record (default none)
    remote: dict | None  # the remotes row: store_url, announce_pk, members_rev
    access: str | None  # "read" / "write": this device's access to the shared session
    event: str  # the event emitted (default "session.synced")
    own: dict | None  # this device's own published log taken in: {pushed_seq, head_rev, tree}
    rejoin: dict | None  # a switch to a share code's generation: {members_rev, keep, push_again}
    chunk: int  # message rows per write transaction of a new session's import (default IMPORT_CHUNK)
    new_only: bool  # refuse a session here (or its case twin) that arrived meanwhile (default False)


async def apply_remote(c: Connections, sid: str, logs: dict[str, RemoteLog], **options: Unpack[ApplyOptions]) -> int:
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
    peers, remote, access = options.get("peers", ()), options.get("remote"), options.get("access")
    own, rejoin, chunk = options.get("own"), options.get("rejoin"), options.get("chunk", IMPORT_CHUNK)
    event = options.get("event", "session.synced")
    if own is None:  # otherwise this device's own log is authoritative
        logs = {d: lg for d, lg in logs.items() if d != c.device_id}
    ops = sorted((op for lg in logs.values() for op in lg.ops), key=lambda o: o.order)
    msgs = [lg.messages for lg in logs.values()]
    chats = sorted(set().union(*(map(itemgetter(1), rows) for rows in msgs)) - {None})
    async with c.transaction() as tx:
        # (all the apply needs of a session held here, read once: whether it is being imported, its quota's level
        # before the writes, its activity before them)
        row = await tx.fetchone("SELECT importing, policy, tokens_used, last_activity FROM sessions WHERE id=?", (sid,))
        if row is not None and row[0]:
            if sid in c.importing:
                raise Conflict(
                    f"session {sid!r} is being imported already; wait for that import to finish", reason="importing"
                )
            # a file's session, hidden until its import ends (a crash's leftovers are gone before the daemon
            # serves): not what a failed import left, and maybe another conversation under this id
            if await tx.fetchone("SELECT 1 FROM file_imports WHERE session_id=?", (sid,)):
                raise Conflict(
                    f"session {sid!r} is being imported from a file on this device; wait for that import to"
                    f" finish, then import the code again (the same session is then taken in as such, a"
                    f" different one refused with what to do)",
                    reason="importing",
                )
            await tx.execute("DELETE FROM sessions WHERE id=?", (sid,))  # what a failed import left
            row = None
        if options.get("new_only", False):
            twin = await case_twin(tx, sid)
            if row is not None or twin is not None:
                raise Conflict(
                    f"session {twin or sid!r} was made on this device (or imported from another code or a file)"
                    f" while this import of session {sid!r} was under way, and may be another conversation under"
                    f" this id: nothing was imported; import the code again (the same session is then taken in"
                    f" as such, a different one refused with what to do)",
                    reason="exists" if row is not None else "case_twin",
                )
        if row is not None or sum(map(len, msgs)) <= chunk:
            quota = quota_of(row[1]) if row is not None else None
            level = warning_level(row[2], quota) if row is not None else None
            before = (row[3],) if row is not None else None
            new = await _apply_logs(
                tx, sid, ops, msgs, logs, before, peers=peers, remote=remote, access=access, own=own
            )
            if rejoin is not None and row is not None:
                await _switch(tx, sid, **rejoin)
            if row is None:  # a session new here: it must fit the limits on active sessions
                await check_imported(tx, c.limits, sid)
            ev = {"type": event, "session": sid, "new": new, "chats": chats}
            # (messages change no policy: with no quota before them and no operation, there is none after, and the
            # level stays "safe" whatever the tokens; not read again)
            moved = level is not None and (bool(ops) or is_quota(quota))
            if moved and (now_level := await quota_level(tx, sid)) != level:
                # another device's writes (or its change of the quota) brought it to another level: an app
                # here is told, as by its own append's messages.appended
                ev["quota_level"] = now_level
            tx.emit(ev)
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
            await pause_for_tests("import.chunk")  # (the tests hold it here: a chunk written, the session hidden)
        async with c.transaction() as tx:
            # (a long session new here: as a short one's, its arrival is its activity)
            await _finish(
                tx, sid, logs, tally, peers=peers, remote=remote, access=access, own=own, arrived=_arrival(None)
            )
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
    """What the message batches of one apply added: the latest Lamport clock, and the tokens (None once some
    rows were here already: the session's total is then counted again). Not their times: those are their
    writers' clocks, and what arrives is activity here from its arrival (_arrival)."""

    def __init__(self) -> None:
        self.max_lam = 0
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
    before: tuple[float] | None,
    *,
    peers: Sequence[dict],
    remote: dict | None,
    access: str | None,
    own: dict | None,
) -> int:
    """`before`: the session's row as held before (its last_activity), None if new here: its logs must create it
    (no operation deletes a session's row)."""
    new = await _apply_ops(tx, sid, ops)
    tally = _Tally()
    new += await _insert_messages(tx, msgs, tally)
    if before is None:
        await _check_created(tx, sid)
    arrived = _arrival(before[0] if before else None) if new else None
    await _finish(tx, sid, logs, tally, peers=peers, remote=remote, access=access, own=own, arrived=arrived)
    return new


def _arrival(before: float | None) -> float:
    """Other devices' writes just taken in are activity here from when they arrive, not at their stamps (which
    apply_op took): those are on their writers' clocks, and a writer whose clock is behind (an hour) would have
    this device end the session for idleness while it writes to it, for every device; one ahead would keep it
    alive here past its idle timeout by as much. `before`: the session's activity here before them (None: new
    here), never moved back. (Their times as shown, the messages', stay their writers'.) The session's
    last_activity from now on, which _finish writes."""
    return max(now(), before or 0.0)


async def _switch(tx: Transaction, sid: str, *, members_rev: int, keep: Sequence[bytes], push_again: bool) -> None:
    """A rejoin's switch to a code's generation (apply_remote's `rejoin`)."""
    await tx.execute("UPDATE remotes SET members_rev=?, announced=0 WHERE session_id=?", (members_rev, sid))
    await tx.execute("DELETE FROM claims_walks WHERE session_id=?", (sid,))  # (the old generation's: claimswalks.py)
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
    arrived: float | None,
) -> None:
    """The bookkeeping after an apply's rows: the session's clock, tokens and activity (`arrived`, if anything
    arrived: _arrival), how far each log is here, what this device may do, where the session syncs, and whom it
    follows."""
    max_lam, added_tokens = tally.max_lam, tally.tokens
    if max_lam:
        # every row new (the usual pull): add their tokens; a sum over the whole session
        # would hold the write lock for tens of milliseconds on a long one. (Its activity in the same statement:
        # one run of the row's triggers, not two)
        await tx.execute(
            "UPDATE sessions SET lamport=max(lamport, ?), tokens_used="
            + ("tokens_used+?" if added_tokens is not None else RECOUNT_SQL)
            + (", last_activity=?" if arrived is not None else "")
            + " WHERE id=?",
            (max_lam, added_tokens if added_tokens is not None else sid, *(() if arrived is None else (arrived,)), sid),
        )
    elif arrived is not None:
        await tx.execute("UPDATE sessions SET last_activity=? WHERE id=?", (arrived, sid))
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
            "head_manifest=CASE WHEN excluded.head_rev > head_rev THEN NULL ELSE head_manifest END, "
            "head_announce=CASE WHEN excluded.head_rev > head_rev THEN NULL ELSE head_announce END, "
            "tree=CASE WHEN excluded.pushed_seq > pushed_seq THEN excluded.tree ELSE tree END, "
            "pending=CASE WHEN excluded.pushed_seq > pushed_seq THEN NULL ELSE pending END, "
            "rekey_claims=coalesce(excluded.rekey_claims, rekey_claims) "
            "WHERE pushed_seq < excluded.pushed_seq OR head_rev < excluded.head_rev",
            (sid, own["pushed_seq"], own["head_rev"], own["tree"], own.get("rekey_claims")),
        )
    for p in peers:
        await save_peer(tx, sid, **p)
