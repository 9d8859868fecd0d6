"""Messages: append (the hot path: limits, quota, context budget, idempotency keys, one batched insert), and
what an append with a key answered. Reading them back (a page of a chat, the whole conversation) is the base
class's, storage/messagereads.py."""

from __future__ import annotations

import builtins
import hashlib
import json
from collections.abc import Awaitable, Callable

from . import contextcount, toolresults
from .activity import stamps
from .appendone import APPEND_ONE
from .apply import apply_op
from .chatcap import check_chat_room, messages_in_chat
from .clock import kept_before
from .connections import Row
from .context import budget_of, context_check
from .errors import (
    NOT_WRITABLE,
    Conflict,
    ContextOverflow,
    IdempotencyKeyReused,
    Invalid,
    NotFound,
    QuotaExceeded,
    check_access,
    quota_exhausted,
    quota_short,
    quota_too_small,
    quota_ways_api,
    quota_ways_out,
)
from .expiry import expired_for_writes, refuse_expired, refuse_inactive
from .groupcommit import Transaction
from .messagereads import MessageReads
from .model import (
    EXTRA_KEYS,
    PLAIN_KEYS,
    Op,
    charge,
    checkpoint_interval,
    dumps,
    pushed_form,
)
from .quotalevel import warning_level
from .search import PUSHED_COLUMNS, insert_messages
from .unknown import no_session

# How long, and how many per session, appends' idempotency keys are remembered at least: the time by
# storage/clock.py's `steady` (no step of the wall clock forgets a key made minutes ago), the number by the
# order they were made in (their rowid), not by their stamps (which a restart after a step back may disorder).
IDEMPOTENCY_TTL = 24 * 3600.0
Also = Callable[[Transaction], Awaitable[None]]  # a caller's writes in an append's transaction (Messages.append)
IDEMPOTENCY_KEEP = 1000
PRUNE_EVERY = 64  # appended messages between two prunings of a session's keys
# What a request's digest hashes (its chat and messages, keys sorted: the same request, the same digest),
# with an encoder built once; the bytes are json.dumps(..., sort_keys=True, separators=(",", ":"))'s.
_digest_json = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode
# One message's INSERT as the appends made it before appendone.py's statement (bench/appendsql.py's
# four_statements, for the comparison)
_INSERT_ONE = f"INSERT INTO messages({PUSHED_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
# An append's statements besides its INSERT (Messages.append; bench/appendsql.py runs the same ones raw, for
# SQLite's own share of an append): one message's writes are appendone.py's one statement, a batch's (or one
# that prunes keys or passes a checkpoint mark) these. The one read: the session, its log's last seq, the chat's
# budget and (with a key) an earlier answer to the same key, since every statement is a hop to the writer.
SESSION_READ = (
    "SELECT s.status, s.access, s.current_chat, s.lamport, s.policy, s.tokens_used,"
    " (SELECT last_seq FROM logs WHERE session_id=s.id AND device_id=?),"
    " c.id, c.policy, c.compacted,"
    " (SELECT request || ' ' || result FROM idempotency WHERE session_id=s.id AND key=?), s.expires_at,"
    " s.last_activity"
    " FROM sessions s LEFT JOIN chats c ON c.session_id=s.id AND c.id=coalesce(?, s.current_chat)"
    " WHERE s.id=? AND s.importing=?"
)
LOG_UPSERT = (
    "INSERT INTO logs(session_id, device_id, last_seq) VALUES (?,?,?)"
    " ON CONFLICT(session_id, device_id) DO UPDATE SET last_seq=excluded.last_seq"
)
SESSION_UPDATE = "UPDATE sessions SET lamport=?, last_activity=?, tokens_used=tokens_used+? WHERE id=?"
KEY_INSERT = "INSERT INTO idempotency(session_id, key, request, result, created_at) VALUES (?,?,?,?,?)"
# Where an append that passed a checkpoint mark ended (storage/missedmarks.py): written by that append only
MARK_END_INSERT = "INSERT OR IGNORE INTO mark_ends(session_id, seq) VALUES (?,?)"


async def _stored_result(
    fetchall: Callable[[str, tuple], Awaitable[list[Row]]], sid: str, device: str, result: str
) -> list[dict]:
    """What an append answered, from its idempotency record: "FIRST_SEQ COUNT", the messages it wrote in this
    device's log (a message is never changed nor deleted but with its session, which takes the record too),
    read back as the append returned them; a record written before that, the answer's JSON itself."""
    if result.startswith("["):
        return json.loads(result)
    first, n = map(int, result.split(" "))
    rows = await fetchall(
        "SELECT chat_id, role, tokens, created_at, seq, lamport FROM messages"
        " WHERE session_id=? AND device_id=? AND seq BETWEEN ? AND ? ORDER BY seq",
        (sid, device, first, first + n - 1),
    )
    return [
        {
            "id": f"{device}-{seq}",
            "chat": chat,
            "role": role,
            "tokens": tokens,
            "created_at": created_at,
            "device": device,
            "seq": seq,
            "lamport": lamport,
        }
        for chat, role, tokens, created_at, seq, lamport in rows
    ]


def check_quota_room(sid: str, used: int, quota: int | None, messages: list[dict], new_tokens: int) -> None:
    """Refuse (quota_exceeded) `messages`, `new_tokens` of the quota, that a session `used` tokens into its
    `quota` has no room for. One rule: a quota used up (100 %: `exhausted`) takes nothing more, a 0-token
    append neither, as a question to a model is refused from 100 % on; below it an append is taken if it fits."""
    if not quota or (used < quota and used + new_tokens <= quota):
        return
    whole = new_tokens > quota  # more than the whole quota: no clone or fork (the same quota) takes them
    raise QuotaExceeded(
        quota_too_small(sid, used, quota, messages, new_tokens)
        if whole
        else (
            f"{quota_exhausted(sid, used, quota)}. "
            if used >= quota  # nothing left: however few tokens these are (0 too), they do not fit
            else f"{quota_short(sid, used, quota, messages, new_tokens)}. "
        )
        + quota_ways_out(sid),
        used=used,
        quota=quota,
        needed=new_tokens,
        api=quota_ways_api(sid, copies=not whole),
    )


class Messages(MessageReads):
    """A session's messages: appended here, read back by MessageReads (storage/messagereads.py)."""

    async def append(
        self,
        sid: str,
        messages: list[dict],
        chat: str | None = None,
        *,
        key: str | None = None,
        answer: bool = False,
        times: list[float] | None = None,
        importing: bool = False,
        held: int | None = None,
        check_results: bool = False,
        asked: bool = False,
        also: Also | None = None,
    ) -> list[dict]:
        """Append validated messages, in order, in one transaction. Returns them as stored (without
        their content, which the caller has). This is the hot path: the common case, one message, is two
        statements (the session row with its log's last seq, the chat's budget and the key's record in one
        read; appendone.py's insert for all its writes, the transaction's last, with no SAVEPOINT).

        With an idempotency `key`, a repeat of the same request (a client's retry) is answered with the
        first one's result and changes nothing; the same key with other messages is refused.

        `answer`: a model's answer that the provider already gave (and counted): it is recorded even
        past the token quota, max_messages_per_chat or a context budget that cannot compact (the checks ran
        before asking; check_room for the answer's room), in a session paused while it was asked, and past
        its idle timeout (the model answering is its activity; its own expires_at still holds).

        `times`: each message's own time (a fork's copies keep their original ones); otherwise now.

        `importing`: to a session an import from a file is writing, hidden until it ends (Sessions.create's
        file_import): no event (end_file_import announces the session). The file's messages are its history:
        recorded past its expiry, token quota or a context budget that cannot compact (an exported session
        whose quota or budget was lowered below what it held, or that expired, comes back as it was); those
        hold for what is written after the import (end_file_import ends an expired one).

        `held`: the messages the chat holds, as the caller read them: one that holds another number (written to
        since) is refused (Conflict, its `held` detail the number now), nothing written (a re-import's tail,
        daemon/reimports.py, follows what it compared, or nothing).

        `check_results`: a tool's message naming a call (tool_call_id) must name one of its chat's (the append
        routes': toolresults.py); an import, or an app's history through the OpenAI endpoint, keeps it as
        given.

        `asked`: a question a model was asked already, its room, quota and context budget checked before
        (check_room, check_fits: the OpenAI endpoint sends the request before it records the question): recorded
        past them as its answer is, though a write that committed meanwhile took what they were judged by (refused,
        it was lost with its prompt billed), and in a session paused meanwhile; an ended or expired one still
        refuses it.

        `also`: the caller's own writes, done in the same transaction once every check passed: committed with the
        messages, or not at all (a kill between two transactions would keep one and lose the other)."""
        if not messages:
            raise Invalid("no messages to append")
        # now(), its wall clock steps counted with it (storage/activity.py), and steady() of the same moment: the
        # key's stamp, read before the wait for the writer as the last activity is
        t, kept = stamps()
        device = self.c.device_id
        digest = None if key is None else hashlib.sha256(_digest_json([chat, messages]).encode()).hexdigest()
        async with self.c.transaction(lazy_savepoint=True) as tx:
            # One read for the session, its log's last seq, the chat's budget and (with a key) an earlier
            # answer to the same key: every statement is a hop to the writer's thread.
            row = await tx.fetchone(SESSION_READ, (device, key, chat, sid, int(importing)))
            if row is not None and row[10] is not None:
                request, _, result = row[10].partition(" ")  # the request's digest is hex: no space in it
                if request != digest:
                    raise IdempotencyKeyReused(
                        f"Idempotency-Key {key!r} was already used for other messages in session {sid!r};"
                        f" send a new key with each new request (the same key only to retry it)"
                    )
                return await _stored_result(tx.fetchall, sid, device, result)  # a repeat: answered as the first time
            if row is None:
                raise await no_session(tx, sid)
            status, access, current, lamport, policy_text, used, seq, chat_row, chat_policy, compacted = row[:10]
            exp, act = row[11], row[12]
            if access in NOT_WRITABLE:
                check_access(sid, access)
            policy = json.loads(policy_text) if policy_text != "{}" else {}
            if (exp is not None or "idle_timeout" in policy) and not importing:  # (most have neither: two tests)
                # a model's answer is not held to the idle timeout: its question was the session's activity,
                # and the model answering since is too (a slow answer does not make the session idle)
                s = {
                    "id": sid,
                    "status": status,
                    "expires_at": exp,
                    "policy": {} if answer else policy,
                    "last_activity": act,
                }
                if await expired_for_writes(tx, sid, s, t):
                    await refuse_expired(self.c, tx, sid, s)
            # a model's answer to a question the session took is recorded though it was paused meanwhile (a
            # pause stops new questions, not an answer already paid for), and so is a question the model was asked
            # already (`asked`); an ended session's proofs are final
            if status != "active" and not ((answer or asked) and status == "paused"):
                await refuse_inactive(tx, sid, status)
            chat_id = chat or current
            if held is not None and (now_held := await messages_in_chat(tx, sid, chat_id)) != held:
                raise Conflict(
                    f"chat {chat_id!r} of session {sid!r} holds {now_held} messages, not the {held} read before:"
                    " it was written to meanwhile",
                    reason="written_meanwhile",
                    held=now_held,
                )
            chats = {m.get("chat") or chat_id for m in messages}
            for c in chats:
                if (
                    c != current
                    and not (c == chat_id and chat_row is not None)
                    and await tx.fetchone("SELECT 1 FROM chats WHERE session_id=? AND id=?", (sid, c)) is None
                ):
                    raise NotFound(f"session {sid!r} has no chat {c!r} (see `sessiond chat ls {sid}`)")
            if check_results and any("tool_call_id" in m for m in messages):  # (nothing more for any other)
                await toolresults.check_results(tx, sid, chat_id, messages)
            cap = self.c.limits.get("max_messages_per_chat")
            if cap and not (answer or asked):  # (their room was checked before the model was asked: check_room)
                for c in chats:
                    adding = sum(1 for m in messages if (m.get("chat") or chat_id) == c)
                    await check_chat_room(tx, self.c.limits, sid, c, adding, cap)
            new_tokens = sum(map(charge, messages))
            quota = policy.get("token_quota")
            if not (answer or importing or asked):
                check_quota_room(sid, used, quota, messages, new_tokens)
            seq = seq or 0
            session_budget = "max_context_tokens" in policy
            for c in sorted(chats):  # context budgets, before anything is written
                known = None
                if c == chat_id and chat_row is not None:  # its budget came with the session row
                    if not session_budget and chat_policy in (None, "{}"):
                        continue  # neither the session nor the chat has one: nothing to count
                    known = budget_of(chat_policy, compacted, policy)
                chat_tokens = sum(contextcount.of(m) for m in messages if (m.get("chat") or chat_id) == c)
                try:
                    cut = await context_check(
                        tx,
                        sid,
                        c,
                        policy,
                        chat_tokens,
                        known,
                        estimate=self.c.estimate,
                        cache=self.c.fixed_cache,
                        limits=self.c.limits,
                    )
                except ContextOverflow:
                    if not (answer or importing or asked):
                        raise
                    cut = None
                if cut is not None:
                    seq += 1
                    lamport += 1
                    body = {"chat": c, "compacted": cut}
                    await tx.execute(
                        "INSERT INTO ops(session_id, device_id, seq, lamport, kind, body, created_at)"
                        " VALUES (?,?,?,?,?,?,?)",
                        (sid, device, seq, lamport, "chat.update", dumps(body), t),
                    )
                    await apply_op(tx, Op(sid, device, seq, lamport, "chat.update", body, t))
                    if not importing:  # announced as `compact` announces one, before the messages it made room for
                        tx.emit({"type": "chat.compacted", "session": sid, "chat": c})
            if also is not None:
                await also(tx)
            seq0, lam0 = seq + 1, lamport + 1
            n = len(messages)
            rows = []
            for i, m in enumerate(messages):
                extra = None
                if not m.keys() <= PLAIN_KEYS:
                    e = {k: m[k] for k in EXTRA_KEYS if m.get(k) is not None}
                    extra = dumps(e) if e else None
                rows.append(
                    (
                        sid,
                        m.get("chat") or chat_id,
                        device,
                        seq0 + i,
                        lam0 + i,
                        m["role"],
                        m["content"],
                        m.get("tokens"),
                        t if times is None else times[i],
                        extra,
                    )
                )
            out = [
                {
                    "id": f"{device}-{r[3]}",
                    "chat": r[1],
                    "role": r[5],
                    "tokens": r[7],
                    "created_at": r[8],
                    "device": device,
                    "seq": r[3],
                    "lamport": r[4],
                }
                for r in rows
            ]
            # an event names the chat of its ids: a batch whose messages name their own chats is one event per
            # chat, in the batch's order
            if len(chats) == 1:
                evs = [{"type": "messages.appended", "session": sid, "chat": rows[0][1], "ids": [m["id"] for m in out]}]
            else:
                by_chat: dict[str, builtins.list[str]] = {}
                for m in out:
                    by_chat.setdefault(m["chat"], []).append(m["id"])
                evs = [{"type": "messages.appended", "session": sid, "chat": c, "ids": i} for c, i in by_chat.items()]
            interval = checkpoint_interval(policy)  # (another device's that is no interval: the default)
            # where an append that passed a checkpoint mark ended, for the start after a crash that loses the
            # checkpoint (missedmarks.py): the next append may be written in the same millisecond (an import's
            # checkpoint is made as it ends, over all of it)
            mark = (used // interval) != ((used + new_tokens) // interval)
            if mark:
                evs[-1]["checkpoint_due"] = True  # the session's tokens passed a multiple of its checkpoint interval
            if quota and (level := warning_level(used + new_tokens, quota)) != warning_level(used, quota):
                evs[-1]["quota_level"] = level  # the token quota's level this append brought it to: an app is told
            if not importing:
                for ev in evs:
                    tx.emit(ev)
            # Forgetting old keys costs three statements: done when this device's log of the session passes a
            # multiple of PRUNE_EVERY, so a session keeps at most IDEMPOTENCY_KEEP + PRUNE_EVERY keys, each at
            # least IDEMPOTENCY_TTL.
            prune = key is not None and (seq0 - 1) // PRUNE_EVERY != (seq0 + n - 1) // PRUNE_EVERY
            mark = mark and not importing
            if n == 1 and not (prune or mark):  # the common case: one statement, the transaction's last
                await tx.execute_alone(
                    APPEND_ONE,
                    (*rows[0], *pushed_form(rows[0][6], rows[0][8]), t, new_tokens, key, digest, f"{seq0} 1", kept),
                )
                return out
            await insert_messages(tx, rows, pushed=True)
            await tx.execute(LOG_UPSERT, (sid, device, seq0 + n - 1))
            await tx.execute(SESSION_UPDATE, (lam0 + n - 1, t, new_tokens, sid))
            if key is not None:  # remembered in this transaction: committed together, or not at all
                await tx.execute(KEY_INSERT, (sid, key, digest, f"{seq0} {n}", kept))
            if prune:
                await tx.execute(
                    "DELETE FROM idempotency WHERE session_id=? AND created_at < ?",
                    (sid, kept_before(IDEMPOTENCY_TTL)),
                )
                # The edge orders every key of the session by rowid (a sort: no index has that order). A session
                # holds fewer keys than its lamport, which each keyed append moves on by one or more (pulls only
                # raise it): one whose lamport is within IDEMPOTENCY_KEEP keeps all of its keys.
                if lam0 + n - 1 > IDEMPOTENCY_KEEP:
                    edge = await tx.fetchone(  # (the table's rowids: the order its keys were made in)
                        "SELECT rowid FROM idempotency WHERE session_id=? ORDER BY rowid DESC LIMIT 1 OFFSET ?",
                        (sid, IDEMPOTENCY_KEEP),
                    )
                    if edge is not None:
                        await tx.execute("DELETE FROM idempotency WHERE session_id=? AND rowid <= ?", (sid, edge[0]))
            if mark:
                await tx.execute(MARK_END_INSERT, (sid, seq0 + n - 1))
        return out

    async def check_fits(self, sid: str, chat: str, messages: list[dict]) -> None:
        """Refuse, before it is done, what appending `messages` (their tokens counted) to the chat would refuse
        for the session's token quota or the chat's context budget, as `append` judges them (a compaction it
        would make is not made here): the OpenAI endpoint sends a request on to the provider before it records
        the request's new messages, and one they do not fit must ask the model nothing."""
        row = await self.c.committed.fetchone("SELECT policy, tokens_used FROM sessions WHERE id=?", (sid,))
        if row is None:
            raise await no_session(self.c.committed, sid)
        policy = json.loads(row[0]) if row[0] and row[0] != "{}" else {}
        check_quota_room(sid, row[1], policy.get("token_quota"), messages, sum(map(charge, messages)))
        adding = sum(map(contextcount.of, messages))  # (their tokens in the context: contextcount.py)
        await context_check(
            self.c.committed,
            sid,
            chat,
            policy,
            adding,
            estimate=self.c.estimate,
            cache=self.c.fixed_cache,
            limits=self.c.limits,
        )

    async def check_room(self, sid: str, chat: str, adding: int, what: str = "") -> None:
        """Refuse (limit_reached) what would add `adding` messages to a chat past max_messages_per_chat,
        before it is done: a question to a model needs room for its answer too. `what`: those messages."""
        cap = self.c.limits.get("max_messages_per_chat")
        if cap:
            await check_chat_room(self.c.committed, self.c.limits, sid, chat, adding, cap, what)

    async def idempotent_result(self, sid: str, key: str) -> list[dict] | None:
        """What an append with this idempotency key answered, if one did (and is still remembered)."""
        rows = await self.c.latest("SELECT result FROM idempotency WHERE session_id=? AND key=?", (sid, key))
        return await _stored_result(self.c.latest, sid, self.c.device_id, rows[0][0]) if rows else None
