"""An append to a chat with a context budget costs O(1), not O(the chat): its budget check read every active
message of the chat (storage/context.py `active`) and the session's texts (`fixed_tokens`) on every append. The
active total is now kept by trigger and the fixed tokens cached under a stamp of the texts
(storage/contexttotals.py); these tests hold both to the full recount (`context`'s numbers, and the budget
decisions made from them) through every kind of writer, in random orders."""

from __future__ import annotations

import json
import os
import random
import re

import pytest

from sessiond.storage import contextcount
from sessiond.storage.context import active, budget_totals, chat_budget, cut_for, fixed_tokens
from sessiond.storage.errors import ContextOverflow
from sessiond.storage.model import Op, RemoteLog

PROMPT = "You are a careful reader of this document. " + "lorem ipsum dolor " * 20_000  # ~360 KB
READS_MESSAGES = re.compile(r"\bFROM\s+messages\b", re.I)
TEXT_TABLES = re.compile(r"\b(session_texts|chat_prompts)\b")
REMOTE = "f0f0f0f0f0f0f0f0"
T0 = 1_700_000_000.0


async def test_an_append_to_a_budgeted_chat_reads_neither_its_messages_nor_the_texts(db):
    """Structural: the statements an append to a long chat with a budget runs (SQLite's trace of them, on the
    writer and the reader) select no message and name neither table of the texts."""
    sid = (
        await db.create_session(
            {"system_prompt": PROMPT, "initial_messages": [{"role": "user", "content": "hi " * 500}]}
        )
    )["id"]
    await db.update_session(sid, {"policy": {"max_context_tokens": 10_000_000}})
    await db.create_chat(sid, {"id": "side", "name": "side", "system_prompt": "own " + PROMPT})
    for chat in ("main", "side"):
        for _ in range(6):
            await db.append_messages(sid, [{"role": "user", "content": f"m{j}", "tokens": 5} for j in range(50)], chat)
        await db.append_messages(sid, [{"role": "user", "content": "warm", "tokens": 1}], chat)  # (counts the texts)
    statements: list[str] = []
    for conn in (db.c._writer, db.c._reader):
        conn.set_trace_callback(statements.append)
    try:
        await db.append_messages(sid, [{"role": "user", "content": "one", "tokens": 3}])
        await db.append_messages(sid, [{"role": "user", "content": "two"}, {"role": "assistant", "content": "3"}])
        await db.append_messages(sid, [{"role": "user", "content": "aside", "tokens": 2}], chat="side")
    finally:
        for conn in (db.c._writer, db.c._reader):
            conn.set_trace_callback(None)
    assert any("INSERT INTO messages" in s for s in statements), statements  # (the test's premise)
    assert (await db.context(sid))["active_tokens"] == 300 * 5 + 1 + 3  # (and the budget's: it was checked)
    assert [s for s in statements if READS_MESSAGES.search(s)] == []
    assert [s for s in statements if TEXT_TABLES.search(s)] == []


MESSAGE_TOKENS = re.compile(r"\btokens\b[^;]*\bFROM\s+messages\b", re.I | re.S)


async def _reads_rows(db, statements: list[str]) -> list[str]:
    """Those of `statements` that read rows of `messages` (not only its messages_order index: SQLite's plan)."""
    out = []
    for s in statements:
        if not READS_MESSAGES.search(s):
            continue
        plan = [r[3] for r in await db.read_all("EXPLAIN QUERY PLAN " + s)]
        if any(" messages " in f" {p} " and "COVERING INDEX" not in p for p in plan):
            out.append(s)
    return out


async def test_context_and_a_compaction_with_nothing_to_cut_read_no_message_rows(db):
    """Structural: `context` (sessiond context, GET .../context, what compact answers) counts a chat's active
    tokens from the kept total, not by reading its messages: with no cut it reads no message row (its count is kept
    too, migration 25), with one it reads only the roles of the messages set aside (a system message
    among them stays active), never their tokens; and a compaction that finds all of the chat within its target
    reads none either."""
    sid = (await db.create_session({"system_prompt": PROMPT, "policy": {"max_context_tokens": 10_000_000}}))["id"]
    for i in range(6):
        batch = [{"role": "system" if j == 7 else "user", "content": f"m{i} {j}", "tokens": 5} for j in range(50)]
        await db.append_messages(sid, batch)
    statements: list[str] = []
    for conn in (db.c._writer, db.c._reader):
        conn.set_trace_callback(statements.append)
    try:
        ctx = await db.context(sid)
        traced_context = list(statements)
        await db.compact(sid, target_tokens=10_000)  # (all of it fits: no cut)
    finally:
        for conn in (db.c._writer, db.c._reader):
            conn.set_trace_callback(None)
    assert (ctx["active_tokens"], ctx["active_messages"], ctx["messages"]) == (1500, 300, 300), ctx
    assert any("chat_tokens" in s for s in traced_context), traced_context  # (the premise: it counts them)
    assert [s for s in statements if MESSAGE_TOKENS.search(s)] == []
    assert await _reads_rows(db, statements) == []
    # a cut: the 4 system messages of the first 200 stay active (20 tokens), with the last 96 messages
    await db.compact(sid, target_tokens=500)
    statements.clear()
    for conn in (db.c._writer, db.c._reader):
        conn.set_trace_callback(statements.append)
    try:
        ctx = await db.context(sid)
    finally:
        for conn in (db.c._writer, db.c._reader):
            conn.set_trace_callback(None)
    assert (ctx["active_tokens"], ctx["active_messages"], ctx["compacted_messages"]) == (500, 100, 200), ctx
    assert [s for s in statements if MESSAGE_TOKENS.search(s)] == []
    assert all("role='system'" in s.replace(" ", "") for s in await _reads_rows(db, statements)), statements
    await _agrees(db, sid, ["main"])


async def _reference(db, sid: str, chat: str, adding: int) -> tuple[bool, list | None, list | None]:
    """What the budget check decides for `adding` tokens, from the full recount: (refused, the cut before, the
    cut after)."""
    q = db.c.committed
    policy = json.loads((await q.fetchone("SELECT policy FROM sessions WHERE id=?", (sid,)))[0])
    p, cut = await chat_budget(q, sid, chat, policy)
    budget = p.get("max_context_tokens")
    if not budget:
        return False, cut, cut
    ctx = await db.context(sid, chat)
    rows = await active(q, sid, chat, cut)
    assert ctx["active_tokens"] == sum(r[4] for r in rows)
    room = budget * (p.get("context_margin") or 0.8) - ctx["fixed_tokens"]
    if ctx["active_tokens"] + adding <= room:
        return False, cut, cut
    if adding > room or p.get("auto_compact") is False:
        return True, cut, cut
    new_cut, left = cut_for(rows, max(0, room / 2 - adding), cut)
    return left + adding > room, cut, (cut if left + adding > room else new_cut)


async def _agrees(db, sid: str, chats: list[str]) -> None:
    """Each chat's kept totals, and what `context` says from them, are the full recount's (every message of the
    chat read), through the reader and the writer."""
    for chat in chats:
        ctx = await db.context(sid, chat)
        q = db.c.committed
        cut = (await chat_budget(q, sid, chat, {}))[1]
        rows = await active(q, sid, chat, cut)
        held = (await q.fetchone("SELECT count(*) FROM messages WHERE session_id=? AND chat_id=?", (sid, chat)))[0]
        full = (await fixed_tokens(q, sid, chat, db.c.estimate), sum(r[4] for r in rows))
        said = {k: ctx[k] for k in ("fixed_tokens", "active_tokens", "active_messages", "compacted_messages")}
        assert said == {
            "fixed_tokens": full[0],
            "active_tokens": full[1],
            "active_messages": len(rows),
            "compacted_messages": held - len(rows),
        }, (chat, ctx)
        assert ctx["messages"] == held, (chat, ctx)
        assert await budget_totals(q, sid, chat, db.c.estimate, db.c.fixed_cache) == full, (chat, ctx)
        async with db.c.transaction() as tx:
            got = await budget_totals(tx, sid, chat, db.c.estimate, db.c.fixed_cache)
        assert got == full, (chat, ctx)


class _Remote:
    """Another device's log, as a pull hands it to apply_remote: messages as rows, the rest as Ops."""

    def __init__(self, sid: str):
        self.sid, self.seq = sid, 0

    async def send(self, db, items: list[tuple[str, dict, int]]) -> None:
        log = RemoteLog(REMOTE, [], [], 0)
        for kind, body, lamport in items:
            self.seq += 1
            if kind == "message.add":
                b = body
                log.messages.append(
                    (self.sid, b["chat"], REMOTE, self.seq, lamport, b["role"], "r", b["tokens"], T0, b.get("extra"))
                )
            else:
                log.ops.append(Op(self.sid, REMOTE, self.seq, lamport, kind, body, T0))
        log.last_seq = self.seq
        await db.apply_remote(self.sid, {REMOTE: log})


async def _make(db, sid: str, rnd: random.Random) -> None:
    await db.create_session(
        {
            "id": sid,
            "system_prompt": "s" * rnd.randrange(0, 120),
            "initial_messages": [{"role": "user", "content": "i" * rnd.randrange(1, 40)}],
            "policy": {"max_context_tokens": rnd.choice([100, 200, 400])},
        }
    )
    await db.create_chat(sid, {"id": "side", "name": "side", "system_prompt": "c" * rnd.randrange(0, 100)})


def _extra(rnd: random.Random) -> dict:
    """A remote message's extra, at times with a context_tokens: a count, or none (its tokens count)."""
    if rnd.random() < 0.7:
        return {}
    counted = rnd.choice([rnd.randrange(20), rnd.randrange(20), "9", 2**41, -1, True, 1.5, None])
    return {"extra": json.dumps({"model": "m", "context_tokens": counted})}


# make test: 6 seeds; more with CONTEXT_TOTALS_SEEDS=N
@pytest.mark.parametrize("seed", range(int(os.environ.get("CONTEXT_TOTALS_SEEDS", 6))))
async def test_kept_totals_and_decisions_are_the_full_recounts(db, seed):
    """Random sequences of appends (refused, compacting, fitting), remote messages landing anywhere (before the
    cut too), remote and local compactions and undos, prompt and policy changes, a session deleted and made
    again with its id: after each step the kept totals are the recount's, and each append decides as the full
    recount does (the same refusals, compactions at the same appends to the same cut)."""
    rnd = random.Random(seed)
    sid = f"01totals{seed:018d}"
    chats = ["main", "side"]
    await _make(db, sid, rnd)
    remote = _Remote(sid)
    decisions = {"refused": 0, "compacted": 0, "fits": 0}
    for step in range(160):
        action = rnd.choices(
            ["append", "remote", "remote_cut", "remote_prompt", "compact", "prompt", "policy", "recreate"],
            [40, 20, 6, 4, 6, 8, 4, 1],
        )[0]
        chat = rnd.choice(chats)
        if action == "append":
            msgs = [
                {
                    "role": rnd.choice(["user", "assistant", "user", "system"]),
                    "content": "x",
                    "tokens": rnd.randrange(31),
                }
                for _ in range(rnd.randint(1, 3))
            ]
            for m in msgs:  # (an answer gone on from, of several: its tokens in the context alone, contextcount.py)
                if rnd.random() < 0.2:
                    m["context_tokens"], m["tokens"] = m["tokens"], 0
            adding = sum(map(contextcount.of, msgs))
            refused, cut_before, cut_after = await _reference(db, sid, chat, adding)
            before = (await db.context(sid, chat))["messages"]
            try:
                await db.append_messages(sid, msgs, chat)
                got = False
            except ContextOverflow:
                got = True
            assert got == refused, (step, chat, adding)
            ctx = await db.context(sid, chat)
            assert ctx["messages"] == before + (0 if refused else len(msgs))
            cut = (await chat_budget(db.c.committed, sid, chat, {}))[1]
            assert cut == cut_after, (step, chat, adding)
            decisions["refused" if refused else "compacted" if cut_after != cut_before else "fits"] += 1
        elif action == "remote":
            lamport = (await db.get_lamport(sid)) + rnd.randint(-20, 3)
            items = [
                (
                    "message.add",
                    {"chat": chat, "role": rnd.choice(["user", "system"]), "tokens": rnd.randrange(20), **_extra(rnd)},
                    max(1, lamport + i),
                )
                for i in range(rnd.randint(1, 3))
            ]
            await remote.send(db, items)
        elif action == "remote_cut":
            rows = await active(db.c.committed, sid, chat, None)
            cut = list(rnd.choice(rows)[:3]) if rows and rnd.random() < 0.7 else None
            await remote.send(db, [("chat.update", {"chat": chat, "compacted": cut}, await db.get_lamport(sid) + 1)])
        elif action == "remote_prompt":  # a prompt changed on another device, synced here
            lamport = await db.get_lamport(sid) + 1
            prompt = rnd.choice([None, "r" * rnd.randrange(300)])
            if rnd.random() < 0.5:
                await remote.send(db, [("session.update", {"system_prompt": prompt}, lamport)])
            else:
                await remote.send(db, [("chat.update", {"chat": "side", "system_prompt": prompt}, lamport)])
        elif action == "compact":
            if rnd.random() < 0.3:
                await db.compact(sid, chat, undo=True)
            else:
                await db.compact(sid, chat, target_tokens=rnd.randrange(0, 100))
        elif action == "prompt":
            which = rnd.randrange(3)
            if which == 0:
                await db.update_session(sid, {"system_prompt": rnd.choice([None, "p" * rnd.randrange(400)])})
            elif which == 1:
                initial = [{"role": "user", "content": "i" * rnd.randrange(1, 200)}] * rnd.randrange(3)
                await db.update_session(sid, {"initial_messages": initial})
            else:
                prompt = rnd.choice([None, "c" * rnd.randrange(300)])
                await db.update_chat(sid, "side", lambda c, prompt=prompt: {"system_prompt": prompt})
        elif action == "policy":
            await db.update_chat(
                sid, chat, lambda c: {"policy": {"max_context_tokens": rnd.choice([None, 50, 100, 400])}}
            )
        else:
            await db.delete_session(sid)
            await _make(db, sid, rnd)
            remote = _Remote(sid)
        await _agrees(db, sid, chats)
    # (all were tried: the default seeds each make every decision; a few of the others make no compaction)
    assert decisions["refused"] and decisions["fits"] and (decisions["compacted"] or seed >= 6), decisions


async def test_clones_and_forks_have_the_totals_of_their_chats(db):
    """A clone, and forks of a session with compacted chats: at a message after the compactions (copied with
    them) and at one before them (without)."""
    sid = (await db.create_session({"system_prompt": "p" * 100, "policy": {"max_context_tokens": 1000}}))["id"]
    await db.create_chat(sid, {"id": "side", "name": "side", "system_prompt": "own"})
    ids = []

    async def append(rounds: range) -> None:
        for i in rounds:
            for chat in ("main", "side"):
                m = {"role": "system" if i == 2 else "user", "content": "x", "tokens": i}
                ids.extend(r["id"] for r in await db.append_messages(sid, [m], chat))

    await append(range(12))
    await db.compact(sid, "main", target_tokens=30)
    await db.compact(sid, "side", target_tokens=60)
    await append(range(12, 15))
    await _agrees(db, sid, ["main", "side"])
    copies = [await db.clone(sid), await db.fork(sid, ids[-1]), await db.fork(sid, ids[4])]
    for copy in copies:
        await _agrees(db, copy["id"], ["main", "side"])
    assert [(await db.context(c["id"], "main"))["compacted_messages"] > 0 for c in copies[1:]] == [True, False]


async def test_a_migrated_database_has_the_totals_of_its_chats(tmp_path):
    """A database of schema 21 with compacted chats gets its totals counted by the migration."""
    from sessiond.storage.database import Database
    from sessiond.storage.schema import migrate

    path = str(tmp_path / "db.sqlite")
    db = await Database.open(path)
    try:
        sid = (await db.create_session({"system_prompt": "p" * 100}))["id"]
        for i in range(10):
            await db.append_messages(sid, [{"role": "system" if i == 3 else "user", "content": "x", "tokens": i}])
        await db.compact(sid, target_tokens=20)
        want = (await db.context(sid))["active_tokens"]
        for stmt in (
            "DROP TABLE openai_made",  # (39's)
            "DROP TABLE openai_choices",  # (37's)
            "DROP TABLE claims_walks",  # (32's)
            "ALTER TABLE sync_state DROP COLUMN head_announce",  # (31's, first: SQLite checks the triggers)
            "ALTER TABLE sync_state DROP COLUMN head_manifest",  # (30's)
            "DROP TABLE chat_tokens",
            "DROP TABLE text_gens",
            "DROP INDEX messages_system",  # (migration 23's: a database of schema 21 has none)
            "DROP TABLE slot_objects",  # (migration 24's; 28 adds its column gone_at)
            "DROP TABLE chat_walks",  # (25's)
            "DROP TABLE session_tags",  # (26's)
            "DROP TABLE frozen_taken",  # (27's)
            "DROP TABLE head_lies",  # (29's)
            "DROP TABLE logs_seen",  # (30's)
            "UPDATE schema_version SET version=21",
        ):
            await db.c.writer.execute(stmt)
        for (name,) in await db.read_all("SELECT name FROM sqlite_master WHERE type='trigger'"):
            if not name.startswith(("chat_tokens_", "text_gens_", "context_totals_", "chat_walks_", "session_tags_")):
                continue
            await db.c.writer.execute(f"DROP TRIGGER {name}")
        await migrate(db.c.writer)
        assert 0 < want < 45 and await budget_totals(db.c.committed, sid, "main", db.c.estimate) == (25, want)
    finally:
        await db.close()
