"""The push state of sessions, read for one session or for all (storage/syncstate.py), and which sessions
the clean-up reads as able to expire."""

from __future__ import annotations

import os
import time

from sessiond.storage.database import Database


async def test_sync_states_of_some_sessions_read_only_those(tmp_path):
    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    try:
        sids = [(await db.create_session({}))["id"] for _ in range(4)]
        await db.append_messages(sids[1], [{"role": "user", "content": "x"}] * 3)
        every = await db.all_sync_states()
        assert set(every) == set(sids)
        one = await db.all_sync_states([sids[1]])
        assert one == {sids[1]: every[sids[1]]}
        assert one[sids[1]]["pending"] == one[sids[1]]["last_seq"] > 0
        assert set(await db.all_sync_states(sids[2:])) == set(sids[2:])
        assert await db.all_sync_states(["no-such-session"]) == {}
    finally:
        await db.close()


async def test_expiry_reads_sessions_with_an_expiry_or_an_idle_timeout(tmp_path):
    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    try:
        plain = (await db.create_session({}))["id"]
        dated = (await db.create_session({"expires_at": time.time() - 1}))["id"]
        idle = (await db.create_session({"policy": {"idle_timeout": 0.001}}))["id"]
        quota = (await db.create_session({"policy": {"token_quota": 10}}))["id"]
        later = time.time() + 1
        assert {s["id"] for s in await db.expired(later)} == {dated, idle}
        assert plain and quota
    finally:
        await db.close()
