"""An append's Idempotency-Key record (storage/messages.py): it names the messages the append wrote ("FIRST_SEQ
COUNT" in this device's log) instead of holding the answer's JSON, and a retry is answered from those rows
exactly as the first time; a record written in the older form (the JSON itself) is still answered."""

from __future__ import annotations

import json

import pytest

from sessiond.storage.errors import IdempotencyKeyReused


async def test_a_retry_is_answered_from_the_messages_the_record_names(db):
    sid = (await db.create_session({}))["id"]
    other = await db.create_chat(sid, {"name": "other"})
    await db.append_messages(sid, [{"role": "user", "content": "before"}])  # the log does not start at the key
    one = await db.append_messages(sid, [{"role": "user", "content": "hello", "tokens": 3}], key="k-1")
    batch = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b", "tokens": 7, "chat": other["id"]},
        {"role": "user", "content": "c", "tokens": 0},
    ]
    many = await db.append_messages(sid, [dict(m) for m in batch], key="k-2")
    await db.append_messages(sid, [{"role": "user", "content": "after"}])

    rows = dict(await db.c.latest("SELECT key, result FROM idempotency WHERE session_id=?", (sid,)))
    assert rows == {"k-1": f"{one[0]['seq']} 1", "k-2": f"{many[0]['seq']} 3"}  # no JSON: the rows say it

    assert await db.append_messages(sid, [{"role": "user", "content": "hello", "tokens": 3}], key="k-1") == one
    assert await db.append_messages(sid, [dict(m) for m in batch], key="k-2") == many
    assert [m["chat"] for m in many] == ["main", other["id"], "main"]
    assert await db.idempotent_result(sid, "k-2") == many
    assert await db.idempotent_result(sid, "k-3") is None
    with pytest.raises(IdempotencyKeyReused):
        await db.append_messages(sid, [{"role": "user", "content": "not hello"}], key="k-1")
    n = await db.c.latest("SELECT count(*) FROM messages WHERE session_id=?", (sid,))
    assert n[0][0] == 6  # the retries wrote nothing


async def test_a_record_holding_the_answer_itself_is_still_answered(db):
    sid = (await db.create_session({}))["id"]
    first = await db.append_messages(sid, [{"role": "user", "content": "hello"}], key="k-1")
    # as an earlier sessiond wrote it: the answer's JSON
    await db.c.write("UPDATE idempotency SET result=? WHERE session_id=? AND key=?", (json.dumps(first), sid, "k-1"))
    assert await db.append_messages(sid, [{"role": "user", "content": "hello"}], key="k-1") == first
    assert await db.idempotent_result(sid, "k-1") == first


async def test_a_session_with_fewer_keys_than_it_keeps_prunes_without_ordering_them(db):
    """Every PRUNE_EVERY keyed appends a session's keys are pruned to the newest IDEMPOTENCY_KEEP: finding the edge
    orders all of the session's keys by rowid (a sort: no index gives that order), up to ~1,064 of them, at an
    append's time. A session cannot hold more keys than its lamport (each keyed append moves it on by one or
    more), so one whose lamport is within IDEMPOTENCY_KEEP needs no edge: its keys are all kept."""
    from sessiond.storage.messages import IDEMPOTENCY_KEEP, PRUNE_EVERY

    sid = (await db.create_session({"name": "few keys"}))["id"]
    seen: list[str] = []
    db.c._writer.set_trace_callback(seen.append)
    try:
        first = await db.append_messages(sid, [{"role": "user", "content": "m0"}], key="k0")
        for i in range(1, PRUNE_EVERY + 1):  # past one pruning
            await db.append_messages(sid, [{"role": "user", "content": f"m{i}"}], key=f"k{i}")
    finally:
        db.c._writer.set_trace_callback(None)
    assert any("DELETE FROM idempotency" in s for s in seen)  # the pruning by age ran
    assert not [s for s in seen if "ORDER BY rowid DESC" in s]
    assert PRUNE_EVERY + 1 <= IDEMPOTENCY_KEEP
    again = await db.append_messages(sid, [{"role": "user", "content": "m0"}], key="k0")  # every key still kept
    assert again[0]["id"] == first[0]["id"]


async def test_a_session_past_the_keys_it_keeps_forgets_the_oldest(db):
    """The other side of the edge skipped above: once a session's keys pass IDEMPOTENCY_KEEP, a pruning leaves the
    newest IDEMPOTENCY_KEEP and forgets the older (a retry of the oldest then appends again)."""
    from sessiond.storage.messages import IDEMPOTENCY_KEEP, PRUNE_EVERY

    sid = (await db.create_session({"name": "many keys"}))["id"]
    made = []
    n = (IDEMPOTENCY_KEEP // PRUNE_EVERY + 2) * PRUNE_EVERY  # past KEEP, then past one more pruning
    for i in range(n):
        made.append(await db.append_messages(sid, [{"role": "user", "content": f"m{i}"}], key=f"k{i}"))
    kept = n - IDEMPOTENCY_KEEP  # among the newest KEEP at every pruning
    again = await db.append_messages(sid, [{"role": "user", "content": f"m{kept}"}], key=f"k{kept}")
    assert again[0]["id"] == made[kept][0]["id"]  # kept: answered as the first time
    anew = await db.append_messages(sid, [{"role": "user", "content": "m0"}], key="k0")  # PRUNE_EVERY+ past KEEP
    assert anew[0]["id"] != made[0][0]["id"]  # forgotten: appended again
