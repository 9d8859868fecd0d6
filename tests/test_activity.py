"""A session's last activity as its idleness is judged (storage/activity.py): one stamped this run is moved by every
step of the wall clock since, so that its idle timeout and `cleanup --older-than` count real elapsed time; one of
an earlier run is judged as stored; a deleted session's note goes with it."""

from __future__ import annotations

import os

import pytest

from clocks import DAY, in_process
from sessiond.storage import activity
from sessiond.storage.clock import set_test_clock, wall
from sessiond.storage.database import Database

HOUR = 3600.0


async def test_a_step_of_the_wall_clock_moves_a_last_activity_of_this_run_with_it(tmp_path, monkeypatch):
    path = str(tmp_path / "clock")
    in_process(monkeypatch, path, 0.0)
    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    try:
        sid = (await db.create_session({"policy": {"idle_timeout": 60}}))["id"]
        await db.append_messages(sid, [{"role": "user", "content": "just now"}])
        stored = (await db.get_session(sid))["last_activity"]
        set_test_clock(path, HOUR)  # (stepped an hour on)
        assert abs((await db.get_session(sid))["last_activity"] - (stored + HOUR)) < 1
        assert await db.expired(wall()) == []  # idle seconds, not an hour
        assert abs(await db.expiry_of(sid) - (stored + HOUR + 60)) < 1
        assert await db.older_than(wall() - 600) == []
        assert [s["id"] for s in await db.older_than(wall() + 1)] == [sid]
        set_test_clock(path, -DAY)  # (then a day back: the stamp stored lies a day in the future)
        assert await db.activity_after(wall()) == 1  # (rewritten to its activity as judged: no later than now)
        judged = (await db.get_session(sid))["last_activity"]
        assert abs(judged - (stored - DAY)) < 1, judged  # real time since it, not counted from the step
        await db.append_messages(sid, [{"role": "user", "content": "again"}])
        assert abs((await db.get_session(sid))["last_activity"] - wall()) < 1
    finally:
        await db.close()


async def test_a_deleted_session_leaves_no_note_behind(tmp_path):
    # (a note a session, dropped with its row: a daemon that made and deleted sessions for months keeps none of them)
    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    try:
        sid = (await db.create_session({}))["id"]
        await db.append_messages(sid, [{"role": "user", "content": "hi"}])
        assert sid in activity._noted
        assert await db.delete_session(sid)
        assert sid not in activity._noted
    finally:
        await db.close()


async def test_a_step_between_an_appends_stamp_and_its_write_still_moves_its_last_activity(tmp_path, monkeypatch):
    """An append reads its stamp (now()) before its transaction reaches the writer; the stamp's note took the wall
    clock's steps counted when the writer's trigger ran. A step of an hour forward in between (the append waiting
    for the writer: a batch ahead of it, under load) paired a stamp of before the step with the count after it, so
    the stamp was never moved by that step: the session written to a moment ago judged an hour idle (its idle
    timeout passed, `cleanup --older-than 30m` deleting it). The count is the one of the stamp's moment."""
    from sessiond.storage import messages

    path = str(tmp_path / "clock")
    in_process(monkeypatch, path, 0.0)
    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    try:
        sid = (await db.create_session({"policy": {"idle_timeout": 600}}))["id"]
        real = messages.expired_for_writes

        async def step_then_check(*args):  # (in the append's transaction: its stamp read, its row not written)
            set_test_clock(path, HOUR)  # (stepped an hour on)
            return await real(*args)

        monkeypatch.setattr(messages, "expired_for_writes", step_then_check)
        await db.append_messages(sid, [{"role": "user", "content": "just now"}])
        monkeypatch.setattr(messages, "expired_for_writes", real)
        judged = (await db.get_session(sid))["last_activity"]
        assert abs(judged - wall()) < 5, (judged, wall())  # written seconds ago, not an hour
        assert await db.expired(wall()) == []
        assert await db.older_than(wall() - 1800) == []
    finally:
        await db.close()


@pytest.mark.parametrize("made", ["session", "chat"])
async def test_a_step_between_a_makings_stamp_and_its_write_still_moves_its_last_activity(tmp_path, monkeypatch, made):
    """As an append's: a session's or a chat's making reads its stamp (now()) before its transaction reaches the
    writer, and a step of an hour forward in between paired a stamp of before it with the count after it. A session
    made (or given a chat) a moment before was judged an hour idle: its idle timeout passed (the clean-up ending it,
    its next append refused as expired), `cleanup --older-than 30m` deleting it."""
    from sessiond.storage import chats, sessions

    path = str(tmp_path / "clock")
    in_process(monkeypatch, path, 0.0)
    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    try:
        module, name = (sessions, "held_twin") if made == "session" else (chats, "refuse_taken_name")
        real = getattr(module, name)

        async def step_then_look(*args, **kw):  # (in the making's transaction: its stamp read, no row written)
            set_test_clock(path, HOUR)  # (stepped an hour on)
            return await real(*args, **kw)

        if made == "session":
            monkeypatch.setattr(module, name, step_then_look)
        sid = (await db.create_session({"policy": {"idle_timeout": 600}}))["id"]
        if made == "chat":
            monkeypatch.setattr(module, name, step_then_look)
            await db.create_chat(sid, {"name": "another"})
        monkeypatch.setattr(module, name, real)
        judged = (await db.get_session(sid))["last_activity"]
        assert abs(judged - wall()) < 5, (judged, wall())  # made seconds ago, not an hour
        assert await db.expired(wall()) == []
        assert await db.older_than(wall() - 1800) == []
    finally:
        await db.close()


async def test_an_append_reads_the_clock_since_boot_once_for_both_its_stamps(tmp_path, monkeypatch):
    """An append's last activity (the wall clock, its steps counted at that read: `stamp`) and its idempotency
    key's stamp (`steady`: the wall clock at the start advanced by the clock since boot) are of one moment; one
    read of each clock gives both (steady = that wall reading less its steps), not a second read for the key."""
    from sessiond.storage import clock

    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    try:
        sid = (await db.create_session({}))["id"]
        await db.append_messages(sid, [{"role": "user", "content": "first"}], key="k0")
        reads = []
        real = clock._elapsed

        def counted() -> float:
            reads.append(1)
            return real()

        monkeypatch.setattr(clock, "_elapsed", counted)
        await db.append_messages(sid, [{"role": "user", "content": "keyed"}], key="k1")
        assert len(reads) == 1, reads
    finally:
        await db.close()
