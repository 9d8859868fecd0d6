"""Budgets: a chat's context budget and its compaction (which messages still count as context), and a
session's token quota."""

from __future__ import annotations

import json
from typing import Any

from . import contextcount
from .apply import local_op
from .chatcap import room_for_chat
from .chats import Chats, refuse_if_ended
from .chatstats import chat_messages
from .connections import Connections
from .contexttotals import TOTALS_READ, FixedCache
from .errors import ContextOverflow, Invalid, new_chat_way, session_path
from .model import CHAT_POLICY_KEYS, message_id, now
from .quotalevel import THRESHOLDS, warning_level
from .sessions import session_row, writable_row
from .tokens import Estimator, counted_text
from .tokens import get as get_estimator

DEFAULT_CONTEXT_MARGIN = 0.8
# what a chat's budget policy is when neither the chat nor its session sets a key: no budget, compaction (when
# one is set) down to 80 % of it, automatic
POLICY_DEFAULTS = {"max_context_tokens": None, "context_margin": DEFAULT_CONTEXT_MARGIN, "auto_compact": True}
_IN_CONTEXT = contextcount.sql("m")  # a message's tokens in the context (its context_tokens, else its tokens)
DEFAULT_ESTIMATE = get_estimator()  # the daemon's own (config.toml's token_estimator) is Connections.estimate


async def chat_budget(q: Any, sid: str, chat: str, policy: dict) -> tuple[dict, list | None]:
    """The chat's budget policy (its own over the session's) and its compaction cutoff, read through `q`."""
    row = await q.fetchone("SELECT policy, compacted FROM chats WHERE session_id=? AND id=?", (sid, chat))
    return budget_of(row[0] if row else None, row[1] if row else None, policy)


def budget_of(chat_policy: str | None, compacted: str | None, policy: dict) -> tuple[dict, list | None]:
    """As chat_budget, from the chat row's policy and compacted columns (JSON text) already read."""
    cp = json.loads(chat_policy) if chat_policy and chat_policy != "{}" else {}
    merged = {k: cp.get(k, policy.get(k)) for k in CHAT_POLICY_KEYS}
    return merged, (json.loads(compacted) if compacted else None)


async def active(q: Any, sid: str, chat: str, cut: list | None) -> list[tuple]:
    """The chat's active context: (lamport, device, seq, role, tokens in the context: storage/contextcount.py)
    after the compaction cutoff (system messages always stay)."""
    if cut is None:
        rows = await q.fetchall(
            f"SELECT lamport, device_id, seq, role, {_IN_CONTEXT} FROM messages m WHERE"
            " session_id=? AND chat_id=? ORDER BY lamport, device_id, seq",
            (sid, chat),
        )
    else:
        rows = await q.fetchall(
            f"SELECT lamport, device_id, seq, role, {_IN_CONTEXT} FROM messages m WHERE"
            " session_id=? AND chat_id=? AND ((lamport, device_id, seq) > (?,?,?) OR"
            " role='system') ORDER BY lamport, device_id, seq",
            (sid, chat, *cut),
        )
    return rows


async def _count(q: Any, sid: str, chat: str, cut: list | None = None, *, system: bool = False) -> int:
    """How many messages the chat holds, counted in an index alone (no message row read): all of them; with `cut`
    those after it, or with `system` its system messages not after it (those a compaction keeps: `active`'s),
    these in migration 23's partial index of the system messages."""
    sql = "SELECT count(*) FROM messages WHERE session_id=? AND chat_id=?"
    args: tuple = (sid, chat)
    if cut is not None:
        after = "(lamport, device_id, seq) > (?,?,?)"
        sql += f" AND role='system' AND ({after}) IS NOT TRUE" if system else f" AND {after}"
        args += tuple(cut)
    return (await q.fetchall(sql, args))[0][0]


async def fixed_tokens(q: Any, sid: str, chat: str, estimate: Estimator) -> int:
    """The tokens sent to a model before a chat's messages with every question, read through `q`: the
    system prompt (the chat's own, else the session's) and the session's initial messages. They count
    against the chat's context budget, and no compaction sets them aside."""
    row = await q.fetchone(
        "SELECT t.system_prompt, t.initial_messages, (SELECT system_prompt FROM chat_prompts"
        " WHERE session_id=t.session_id AND chat_id=?) FROM session_texts t WHERE t.session_id=?",
        (chat, sid),
    )
    if row is None:
        return 0
    system = row[2] or row[0]
    total = estimate(system) if isinstance(system, str) and system else 0
    try:
        initial = json.loads(row[1]) if row[1] else []
    except ValueError:
        initial = []
    for m in initial if isinstance(initial, list) else ():
        if not isinstance(m, dict):
            continue
        t = m.get("tokens")
        if isinstance(t, int) and not isinstance(t, bool):
            total += t
        elif isinstance(m.get("content"), str):
            total += estimate(counted_text(m))
    return total


async def budget_totals(
    q: Any, sid: str, chat: str, estimate: Estimator, cache: FixedCache | None = None
) -> tuple[int, int]:
    """The chat's fixed tokens (fixed_tokens) and the total of its active messages' (those of `active`), read
    through `q` in one statement of O(1) cost whatever the chat's length or its texts' size: the total as
    triggers keep it (storage/contexttotals.py), the fixed tokens from `cache` while the texts' stamp is the one
    they were counted under (counted again, and kept, when it is not)."""
    row = await q.fetchone(TOTALS_READ, (sid, chat))
    total, gen = (row[0] or 0, row[1]) if row else (0, None)
    fixed = None if cache is None else cache.get(sid, chat, gen, estimate)
    if fixed is None:
        fixed = await fixed_tokens(q, sid, chat, estimate)  # (read in the stamp's transaction: of those texts)
        if cache is not None:
            cache.put(sid, chat, gen, estimate, fixed)
    return fixed, total


async def _own_policy(q: Any, sid: str, chat: str) -> dict:
    """The chat's own policy (what `chat new`/`chat set` gave it), read for a refusal's way out."""
    row = await q.fetchone("SELECT policy FROM chats WHERE session_id=? AND id=?", (sid, chat))
    own = json.loads(row[0]) if row and row[0] else {}
    return own if isinstance(own, dict) else {}


def _setter(sid: str, chat: str, own: dict, key: str) -> str:
    """The command that changes the context setting `key` where it is set: the chat's own (which wins over the
    session's, so `sessiond set` would change nothing), else the session's."""
    return f"sessiond chat set {sid} {chat}" if own.get(key) is not None else f"sessiond set {sid}"


def _setter_api(sid: str, chat: str, own: dict, key: str, value: str) -> str:
    """_setter's change in API terms (`details.api`): `key` set to `value` where it is set."""
    path = session_path(sid, "chats", chat) if own.get(key) is not None else session_path(sid)
    return f"PATCH {path} {{{json.dumps(key)}: {value}}}"


def cut_for(active: list[tuple], target: float, cut: list | None) -> tuple[list | None, int]:
    """Drop the oldest non-system messages until the rest is at most `target` tokens: the new cutoff, and
    the tokens left (more than `target` when the system messages alone are)."""
    total = sum(r[4] for r in active)
    new_cut = cut
    for lam, dev, seq, role, tokens in active:
        if total <= target:
            break
        if role == "system":
            continue
        total -= tokens
        new_cut = [lam, dev, seq]
    return new_cut, total


async def context_check(
    tx: Any,
    sid: str,
    chat: str,
    policy: dict,
    adding: int,
    budget_read: tuple[dict, list | None] | None = None,
    *,
    estimate: Estimator = DEFAULT_ESTIMATE,
    cache: FixedCache | None = None,
    limits: dict | None = None,
) -> list | None:
    """Check the chat's context budget for `adding` more tokens (inside the append's transaction;
    `budget_read`: its chat_budget if already read). The budget bounds what a question sends the model:
    the system prompt and initial messages (fixed_tokens, counted with `estimate`, kept in `cache`) and the
    chat's active messages (their total as triggers keep it: budget_totals). Returns a new compaction cutoff
    if the chat must compact first, None if it fits; raises ContextOverflow if it cannot fit (naming another
    chat as a way on only while `limits`' max_chats_per_session leaves room for one)."""
    p, cut = budget_read or await chat_budget(tx, sid, chat, policy)
    budget = p.get("max_context_tokens")
    if not budget:
        return None
    margin = p.get("context_margin") or DEFAULT_CONTEXT_MARGIN
    fixed, total = await budget_totals(tx, sid, chat, estimate, cache)
    room = budget * margin - fixed  # what the chat's messages may take
    if total + adding <= room:
        return None
    own = await _own_policy(tx, sid, chat)
    raise_budget = f"raise the budget (`{_setter(sid, chat, own, 'max_context_tokens')} --max-context-tokens N`), "
    raise_api = _setter_api(sid, chat, own, "max_context_tokens", "N")
    if adding > room:  # no compaction makes room for it: said so, compaction on or off
        if fixed:
            raise ContextOverflow(
                f"these messages ({adding} tokens) do not fit in the context budget of chat {chat!r} of session "
                f"{sid!r} ({budget} x {margin}) beside its system prompt and initial messages ({fixed} tokens, "
                f"sent with every question): {raise_budget}shorten the prompt, send the messages in smaller "
                "parts, or to another chat",
                budget=budget,
                adding=adding,
                fixed=fixed,
                api=[raise_api],
                reason="beside_fixed",
            )
        raise ContextOverflow(
            f"these messages alone ({adding} tokens) exceed the context budget of chat {chat!r} of session "
            f"{sid!r} ({budget} x {margin}): {raise_budget}send them in smaller parts, or to another chat",
            budget=budget,
            adding=adding,
            api=[raise_api],
            reason="over_budget",
        )
    besides = f" (and {fixed} of its system prompt and initial messages)" if fixed else ""
    if p.get("auto_compact") is False:
        another = await room_for_chat(tx, limits or {}, sid)  # (a way on only while the chats' limit leaves room)
        turn_on = f"turn automatic compaction on (`{_setter(sid, chat, own, 'auto_compact')} --auto-compact`)"
        raise ContextOverflow(
            f"chat {chat!r} of session {sid!r} holds {total} tokens of context{besides}; {adding} more would pass "
            f"its budget of {budget} x {margin} and automatic compaction is off. Compact it (`sessiond compact {sid} "
            f"--chat {chat}`)"
            + (
                f", {turn_on} or start another chat (`sessiond chat new {sid} --switch`)"
                if another
                else f" or {turn_on}"
            ),
            active=total,
            budget=budget,
            adding=adding,
            fixed=fixed,
            api=[
                f'POST {session_path(sid, "compact")} {{"chat": {json.dumps(chat)}}}',
                _setter_api(sid, chat, own, "auto_compact", "true"),
                *([new_chat_way(sid)] if another else []),
            ],
            reason="compaction_off",
        )
    # the one full read: where the compaction cuts (once per compaction, not per append)
    new_cut, left = cut_for(await active(tx, sid, chat, cut), max(0, room / 2 - adding), cut)
    if left + adding > room:  # the system messages compaction keeps leave no room for these
        another = await room_for_chat(tx, limits or {}, sid)
        raise ContextOverflow(
            f"chat {chat!r} of session {sid!r} keeps {left} tokens of system messages{besides}, which no "
            f"compaction sets aside; {adding} more would pass its budget of {budget} x {margin}: "
            f"{raise_budget}send less"
            + (f", or start another chat (`sessiond chat new {sid} --switch`)" if another else ""),
            active=left,
            budget=budget,
            adding=adding,
            fixed=fixed,
            api=[raise_api, *([new_chat_way(sid)] if another else [])],
            reason="system_kept",
        )
    return new_cut


class Context:
    def __init__(self, c: Connections, chats: Chats):
        self.c = c
        self.chats = chats

    async def compact(
        self, sid: str, chat: str | None = None, *, target_tokens: int | None = None, undo: bool = False
    ) -> dict:
        """Compact a chat's active context down to `target_tokens` (or its budget's half), or undo all
        compaction. Dropped messages stay in the history. The cut is computed in the write transaction,
        from the chat as stored then: one computed before it could be older than an automatic compaction
        (an append's) or another compact that committed meanwhile, and writing it moved the cut back."""
        q = self.c.committed
        srow = await writable_row(q, sid, self.c)
        await refuse_if_ended(q, sid, srow)
        chat = srow["current_chat"] if chat is None else chat
        await self.chats.get(sid, chat)
        async with self.c.transaction() as tx:
            row = await writable_row(tx, sid, self.c)
            await refuse_if_ended(tx, sid, row)  # (ended meanwhile)
            policy = json.loads(row["policy"])
            cut = None if undo else await self._cut(tx, sid, chat, policy, target_tokens)
            # a cut where it stands (all of it fits already; nothing compacted to undo) is no change: nothing is
            # written, pushed or announced, as a switch to the current chat (a write would also be a
            # last-writer-wins update on every device, able to move back a cut another made meanwhile)
            if cut != (await chat_budget(tx, sid, chat, policy))[1]:
                await local_op(
                    tx, self.c.device_id, sid, row["lamport"], "chat.update", {"chat": chat, "compacted": cut}, now()
                )
                tx.emit({"type": "chat.compacted", "session": sid, "chat": chat})
        return await self.context(sid, chat)

    async def _cut(self, tx: Any, sid: str, chat: str, policy: dict, target_tokens: int | None) -> list | None:
        """The cut that leaves at most `target_tokens` of the chat's active messages (or half of what its budget
        leaves them beside the system prompt and initial messages), from its cut as stored (read through `tx`):
        never before it. The chat's messages are read only when the kept total says a cut must be found."""
        p, cut = await chat_budget(tx, sid, chat, policy)
        fixed, total = await budget_totals(tx, sid, chat, self.c.estimate, self.c.fixed_cache)
        target = target_tokens
        if target is None:
            budget = p.get("max_context_tokens")
            if not budget:
                raise Invalid(
                    f"chat {chat!r} has no context budget to compact to: give target_tokens, the tokens to keep active"
                )
            target = max(0, budget * (p.get("context_margin") or DEFAULT_CONTEXT_MARGIN) - fixed) / 2
        if total <= target:  # all of it fits already: where it stands (as cut_for finds it, reading every message)
            return cut
        return cut_for(await active(tx, sid, chat, cut), target, cut)[0]

    async def set_cuts(self, sid: str, cuts: dict[str, list], *, importing: bool = False) -> None:
        """Set chats' compaction cutoffs as given ({chat: [lamport, device, seq]}), in one transaction (a
        fork taking its source's). `importing`: of a session still hidden (a fork being made): no event."""
        async with self.c.transaction() as tx:
            lamport = (await writable_row(tx, sid, self.c, importing=importing))["lamport"]
            for chat, cut in cuts.items():
                op = await local_op(
                    tx, self.c.device_id, sid, lamport, "chat.update", {"chat": chat, "compacted": cut}, now()
                )
                lamport = op.lamport
                if not importing:
                    tx.emit({"type": "chat.compacted", "session": sid, "chat": chat})

    async def context(self, sid: str, chat: str | None = None) -> dict:
        q = self.c.committed
        srow = await session_row(q, sid)
        chat = srow["current_chat"] if chat is None else chat
        await self.chats.get(sid, chat)
        policy = json.loads(srow["policy"])
        p, cut = await chat_budget(q, sid, chat, policy)
        # counted from indexes, no message row read (the tokens and the chat's count kept by trigger, contexttotals.py
        # and chatstats.py): they read every active message of the chat into Python (80 ms for 33,000,
        # bench/scale.py); the active ones of a compacted chat are a seek from its cut, the rest a count kept
        fixed, active_tokens = await budget_totals(q, sid, chat, self.c.estimate, self.c.fixed_cache)
        total = await chat_messages(q, sid, chat)  # (kept by trigger: storage/chatstats.py)
        active_n = (
            total if cut is None else await _count(q, sid, chat, cut) + await _count(q, sid, chat, cut, system=True)
        )
        return {
            "session": sid,
            "chat": chat,
            # the values in force (the chat's own, else the session's, else the default), and which are defaults
            "policy": {k: POLICY_DEFAULTS[k] if p.get(k) is None else p[k] for k in CHAT_POLICY_KEYS},
            "defaults": [k for k in CHAT_POLICY_KEYS if p.get(k) is None],
            "compacted_upto": message_id(cut[1], cut[2]) if cut else None,
            "active_messages": active_n,
            "active_tokens": active_tokens,
            # sent before them with every question, and counted against the budget with them
            "fixed_tokens": fixed,
            "compacted_messages": total - active_n,
            "messages": total,
        }

    async def messages(self, sid: str, chat: str) -> list[dict]:
        """The chat's active context as messages to send to a model, oldest first: every message the
        compaction has not set aside (system messages always stay), as {role, content[, name,
        tool_call_id, tool_calls, call_fields and the provider that gave them]}. A tool's result whose call
        the compaction set aside is left out with it: a model's API refuses a result that answers no call
        before it."""
        q = self.c.committed
        srow = await session_row(q, sid)
        _, cut = await chat_budget(q, sid, chat, json.loads(srow["policy"]))
        sql = "SELECT role, content, extra FROM messages WHERE session_id=? AND chat_id=?"
        args: tuple = (sid, chat)
        if cut is not None:
            sql += " AND ((lamport, device_id, seq) > (?,?,?) OR role='system')"
            args += tuple(cut)
        out = []
        calls: set[str] = set()  # the ids of the calls in the context so far
        for role, content, extra in await q.fetchall(sql + " ORDER BY lamport, device_id, seq", args):
            m = {"role": role, "content": content}
            if extra:
                e = json.loads(extra)
                m.update({k: e[k] for k in ("name", "tool_call_id", "tool_calls") if e.get(k) is not None})
                if m.get("tool_calls") and e.get("call_fields"):  # sent back to the provider that gave them
                    m.update(call_fields=e["call_fields"], provider=e.get("provider"))
                calls.update(c["id"] for c in m.get("tool_calls") or ())
                if cut is not None and role == "tool" and m.get("tool_call_id") not in calls | {None}:
                    continue
            out.append(m)
        return out

    async def quota(self, sid: str) -> dict:
        row = await session_row(self.c.committed, sid)
        policy = json.loads(row["policy"])
        quota = policy.get("token_quota")
        used = row["tokens_used"]
        return {
            "session": sid,
            "tokens_used": used,
            "token_quota": quota,
            "remaining": max(0, quota - used) if quota else None,  # (a model's answer may pass the quota)
            "over": max(0, used - quota) if quota else None,  # how far it did (a lowered quota too)
            "level": warning_level(used, quota),
            "thresholds": dict(THRESHOLDS),
        }
