"""A session's statistics (GET .../stats, `sessiond stats SESSION`) read every message of the session to count
each chat's messages and average its response times (184 ms for 100,000 messages, bench/results/profile-scale.md),
and a session shown counted its messages' index (7 ms). The counts are kept by trigger now, and the walk's state as
far as the last statistics read (storage/chatstats.py): these tests hold the calls to what was written since, and
the numbers to the old walk over the messages through every kind of writer."""

from __future__ import annotations

import json
import random
import re

from sessiond.daemon.formats import export, import_file
from sessiond.storage.model import RemoteLog
from test_scale_reads import CHATS, _session, _steps_per_size

READS_MESSAGES = re.compile(r"\bFROM\s+messages\b", re.I)
REMOTE = "f0f0f0f0f0f0f0f0"
T0 = 1_700_000_000.0


async def _traced(db, call) -> list[str]:
    """The statements `call()` runs on the database's connections (SQLite's trace)."""
    statements: list[str] = []
    for conn in (db.c._writer, db.c._reader):
        conn.set_trace_callback(statements.append)
    try:
        await call()
    finally:
        for conn in (db.c._writer, db.c._reader):
            conn.set_trace_callback(None)
    return statements


async def _walked(db, sid: str) -> list[dict]:
    """Each chat's numbers as storage/stats.py counted them before they were kept: a walk of its messages."""
    out = []
    for c in await db.list_chats(sid):
        rows = await db.read_all(
            "SELECT role, created_at, extra FROM messages WHERE session_id=? AND chat_id=? ORDER BY lamport, device_id,"
            " seq",
            (sid, c["id"]),
        )
        waits, pending, firsts, totals = [], None, [], []
        for role, t, extra in rows:
            if extra and '"response"' in extra:
                r = json.loads(extra).get("response") or {}
                if isinstance(r.get("first_token_ms"), int):
                    firsts.append(r["first_token_ms"])
                if isinstance(r.get("total_ms"), int):
                    totals.append(r["total_ms"])
            if role == "user":
                pending = t if pending is None else pending
            elif role == "assistant" and pending is not None:
                if t >= pending:
                    waits.append(t - pending)
                pending = None
        out.append(
            {
                "chat": c["id"],
                "name": c["name"],
                "messages": len(rows),
                "avg_response_seconds": round(sum(waits) / len(waits), 3) if waits else None,
                "answers": len(totals),
                "avg_first_token_seconds": round(sum(firsts) / len(firsts) / 1000, 3) if firsts else None,
                "avg_answer_seconds": round(sum(totals) / len(totals) / 1000, 3) if totals else None,
            }
        )
    return out


async def _check(db, sid: str) -> dict:
    got = await db.stats(sid)
    assert got["per_chat"] == await _walked(db, sid), sid
    held = (await db.read_one("SELECT count(*) FROM messages WHERE session_id=?", (sid,)))[0]
    assert got["messages"] == held == sum(c["messages"] for c in got["per_chat"]), sid
    return got


async def test_a_sessions_stats_read_what_was_written_since(db):
    """Structural: `stats SESSION` after a few appends does the same work (SQLite's VM steps, writer and reader) in
    a session of 300 and of 3,000 messages a chat: it reads the messages written since the last statistics, not
    the session. And a session shown counts its messages without reading them (SQLite's trace)."""

    sids = []

    async def stats(sid: str) -> None:  # (called twice a session: the first walks it whole)
        for chat in CHATS:
            pair = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
            await db.append_messages(sid, pair, chat)
        await db.stats(sid)
        sids.append(sid)

    small, large = await _steps_per_size(db, stats)
    assert large < small * 1.5, (small, large)
    for sid in sids:
        await _check(db, sid)
    sid = await _session(db, 300)
    statements = await _traced(db, lambda: db.get_session(sid, counts=True))
    assert any("FROM sessions" in s for s in statements), statements  # (the test's premise: the call ran)
    assert [s for s in statements if READS_MESSAGES.search(s)] == []
    assert (await db.get_session(sid, counts=True))["message_count"] == 900


def _message(rnd: random.Random, j: int) -> dict:
    role = rnd.choice(["user", "user", "assistant", "assistant", "tool", "system"])
    m: dict = {"role": role, "content": f"m{j}", "tokens": rnd.randrange(5)}
    if role == "tool":
        m["role"] = "user"  # (a tool result must name a call: users stand in, the walk skips tools either way)
    if m["role"] == "assistant" and rnd.random() < 0.6:
        m["response"] = {"first_token_ms": rnd.randrange(2000), "total_ms": rnd.randrange(2000, 9000)}
    return m


class _Remote:
    """Another device's log as a pull hands it to apply_remote: its messages land anywhere in the order (their
    lamport), with times of their own (one may go back: an assistant's before the user's it follows)."""

    def __init__(self, sid: str, low: int = 1):
        self.sid, self.seq, self.low = sid, 0, low  # (low: no lower lamport, as a device has seen the chats made)

    async def send(self, db, rnd: random.Random, chats: list[str], n: int) -> None:
        log = RemoteLog(REMOTE, [], [], 0)
        top = (await db.read_one("SELECT max(lamport) FROM messages WHERE session_id=?", (self.sid,)))[0] or 1
        for _ in range(n):
            self.seq += 1
            role = rnd.choice(["user", "assistant", "system"])
            extra = None
            if role == "assistant" and rnd.random() < 0.5:
                times = {"first_token_ms": rnd.randrange(900), "total_ms": rnd.randrange(9000)}
                extra = json.dumps({"response": times})
            t = T0 + rnd.uniform(-50, 50) + self.seq
            lamport = rnd.randint(self.low, top + 2)
            row = (self.sid, rnd.choice(chats), REMOTE, self.seq, lamport, role, "r", 1, t, extra)
            log.messages.append(row)
        log.last_seq = self.seq
        await db.apply_remote(self.sid, {REMOTE: log})


async def test_kept_stats_are_the_walks_through_every_writer(db):
    """Appends (answers with their measured times), another device's messages landing anywhere in the order with
    times that go back, compaction and its undo, a clone, forks, an import of an export, and deletes: each
    session's numbers are, after each step, the walk over its messages."""
    rnd = random.Random(7)
    sid = (await db.create_session({"name": "varied"}))["id"]
    chats = ["main", "side"]
    await db.create_chat(sid, {"id": "side", "name": "side"})
    remote = _Remote(sid, (await db.read_one("SELECT lamport FROM sessions WHERE id=?", (sid,)))[0] + 1)
    sessions = [sid]
    for step in range(40):
        chat = rnd.choice(chats)
        await db.append_messages(sid, [_message(rnd, step * 10 + k) for k in range(rnd.randint(1, 6))], chat)
        if step % 3 == 0:
            await remote.send(db, rnd, chats, rnd.randint(1, 8))
        if step % 9 == 4:
            await db.compact(sid, chat, target_tokens=10)
            await _check(db, sid)
        if step % 9 == 7:
            await db.compact(sid, chat, undo=True)
        await _check(db, sid)
    sessions.append((await db.clone(sid))["id"])
    order = await db.list_messages(sid, all_chats=True, limit=1000)
    for at in (order[3]["id"], order[len(order) // 2]["id"], order[-1]["id"]):
        sessions.append((await db.fork(sid, at))["id"])
    data = json.loads(json.dumps(await export(db, sid, "json")))
    data["session"].pop("id")  # (imported as a session of its own)
    made, _ = await import_file(db, data, "json", db.c.estimate, remove=db.delete_session)
    sessions += [s["id"] for s in made]
    for s in sessions:
        await _check(db, s)
    await db.append_messages(sessions[1], [_message(rnd, 1000 + k) for k in range(5)])
    await db.delete_session(sessions[2])
    await db.delete_session(sid)
    for table in ("chat_tokens", "chat_walks"):
        gone = (sid, sessions[2])
        assert (await db.read_one(f"SELECT count(*) FROM {table} WHERE session_id IN (?, ?)", gone))[0] == 0
    for s in sessions[1:2] + sessions[3:]:
        got = await _check(db, s)
    assert any(c["avg_response_seconds"] and c["avg_answer_seconds"] for c in got["per_chat"])  # (what it tests)


async def test_the_migration_counts_the_sessions_already_here(tmp_path):
    """Migration 25 fills the kept numbers of every chat already in the database with the walk's."""
    from sessiond.storage.database import Database

    path = str(tmp_path / "db.sqlite")
    rnd = random.Random(3)
    old = await Database.open(path, upto=24)  # (its writes: another device's messages, as a pull takes them in)
    try:
        sids = [(await old.create_session({"name": f"s{i}"}))["id"] for i in range(3)]
        await old.create_chat(sids[0], {"id": "side", "name": "side"})
        for sid in sids:
            low = (await old.read_one("SELECT lamport FROM sessions WHERE id=?", (sid,)))[0] + 1
            remote = _Remote(sid, low)
            for _ in range(6):  # (anywhere in the order)
                await remote.send(old, rnd, ["main", "side"] if sid == sids[0] else ["main"], rnd.randint(1, 20))
    finally:
        await old.close()
    db = await Database.open(path)
    try:
        walked = await db.read_all("SELECT session_id, chat_id, walked FROM chat_walks ORDER BY 1, 2")
        held = await db.read_all("SELECT session_id, chat_id, count(*) FROM messages GROUP BY 1, 2 ORDER BY 1, 2")
        assert [tuple(r) for r in walked] == [tuple(r) for r in held]  # (filled: no statistics walk them again)
        for sid in sids:
            await _check(db, sid)
    finally:
        await db.close()


async def test_the_daemons_message_count_reads_no_message(db):
    """`status`'s counts.messages was a count(*) of every message's index entry: it sums the chats' kept counts now
    (SQLite's trace: no statement on messages), less those of a session being imported, as the count did."""
    for i in range(3):
        sid = (await db.create_session({"name": f"s{i}"}))["id"]
        await db.append_messages(sid, [{"role": "user", "content": f"m{j}"} for j in range(5 + i)])
    async with db.c.transaction() as tx:  # (one being imported: hidden, as apply_remote's first transaction makes it)
        await tx.execute("UPDATE sessions SET importing=1 WHERE id=?", (sid,))
    got: dict = {}

    async def counts() -> None:
        got.update(await db.counts())

    statements = await _traced(db, counts)
    assert any("FROM sessions" in s for s in statements), statements  # (the test's premise: the call ran)
    assert [s for s in statements if READS_MESSAGES.search(s)] == []
    held = await db.read_one(
        "SELECT count(*) FROM messages WHERE session_id NOT IN (SELECT id FROM sessions WHERE importing)"
    )
    assert got["messages"] == held[0] == 11 and got["sessions"] == 2, got


async def _from_another_device(db, extras: list[dict]) -> str:
    """A session holding another device's assistant messages with these extra fields (its map, as it made it)."""
    sid = (await db.create_session({"name": "odd"}))["id"]
    log = RemoteLog(REMOTE, [], [], 0)
    for i, extra in enumerate(extras, 1):
        log.messages.append((sid, "main", REMOTE, i, 100 + i, "assistant", "r", 1, T0 + i, json.dumps(extra)))
    log.last_seq = len(extras)
    await db.apply_remote(sid, {REMOTE: log})
    return sid


async def test_a_response_that_is_no_object_counts_no_time(db):
    """A message's extra fields from another device's log are its map as that writer made it: a `response` that is
    no object made the walk raise AttributeError, the session's statistics answered 500 for good. It counts no
    time, as migration 25's fill counts none."""
    sid = await _from_another_device(db, [{"response": "fast"}, {"response": [1]}, {"response": {"total_ms": 8}}])
    for _ in range(2):  # (the second from what the first kept)
        got = (await db.stats(sid))["per_chat"]
        assert [(c["messages"], c["answers"], c["avg_answer_seconds"]) for c in got] == [(3, 1, 0.008)], got


async def test_times_whose_sum_passes_sqlites_integers_are_answered(db):
    """Times in range each, whose sum passes SQLite's integers (another device's log, as its writer made it), made
    keeping the walk raise OverflowError: the session's statistics answered 500 for good. They are answered (as the
    walk before the kept one answered them), the walk not kept."""
    big = 2**62
    sid = await _from_another_device(
        db, [{"response": {"first_token_ms": big, "total_ms": 5}}, {"response": {"first_token_ms": big, "total_ms": 7}}]
    )
    for _ in range(2):
        got = (await db.stats(sid))["per_chat"]
        assert [(c["messages"], c["answers"]) for c in got] == [(2, 2)], got
        assert got[0]["avg_first_token_seconds"] == round(2 * big / 2 / 1000, 3), got
        assert got[0]["avg_answer_seconds"] == 0.006, got


async def test_the_migration_opens_a_home_whose_times_sum_past_sqlites_integers(tmp_path):
    """Migration 25's fill summed another device's response times in SQL: a home holding such a writer's messages
    (times in range each, their sum past SQLite's integers) could not be opened after the upgrade ("integer
    overflow"). Such a chat's walk is left out of the fill (the next statistics walk it, as any chat's after a
    message landed before its kept point), every other chat's kept as before."""
    from sessiond.storage.database import Database

    path = str(tmp_path / "db.sqlite")
    big = 2**62
    old = await Database.open(path, upto=24)
    try:
        odd = await _from_another_device(
            old, [{"response": {"first_token_ms": big, "total_ms": 5}}, {"response": {"first_token_ms": big}}]
        )
        plain = (await old.create_session({"name": "plain"}))["id"]
        await old.append_messages(plain, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    finally:
        await old.close()
    db = await Database.open(path)
    try:
        kept = await db.read_all("SELECT session_id FROM chat_walks")
        assert [r[0] for r in kept] == [plain]
        got = (await db.stats(odd))["per_chat"]
        assert [(c["messages"], c["answers"], c["avg_answer_seconds"]) for c in got] == [(2, 1, 0.005)], got
        # (times past 2^40 ms: no count the API takes, dropped as a pull drops them since, by migration 35)
        assert got[0]["avg_first_token_seconds"] is None, got
        await _check(db, plain)
    finally:
        await db.close()
