"""The push state of sessions, read for one session or for all (storage/syncstate.py), and which sessions
the clean-up reads as able to expire."""

from __future__ import annotations

import os
import time

import pytest

from sessiond.storage.database import Database
from sessiond.storage.errors import NotFound


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
        # (an idle timeout the API takes, 1 s at least: a row's policy holds no value the API would not take since
        # 0.41.0, storage/pulledpolicy.py, and 0.001 s was dropped there)
        idle = (await db.create_session({"policy": {"idle_timeout": 1}}))["id"]
        quota = (await db.create_session({"policy": {"token_quota": 10}}))["id"]
        later = time.time() + 2
        assert {s["id"] for s in await db.expired(later)} == {dated, idle}
        assert plain and quota
    finally:
        await db.close()


async def test_a_share_s_records_of_a_session_deleted_meanwhile_are_refused_as_not_found(tmp_path):
    """A share racing its session's deletion (the session an OpenAI request made, dropped when its provider failed:
    openai_cut.drop_made; or a `sessiond rm`) wrote its remote, or its issued code's record, for a session gone: the
    foreign key failed, and the share was answered 500 `internal` where a share of a deleted session is 404."""
    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    try:
        sid = (await db.create_session({}))["id"]
        await db.delete_session(sid)
        with pytest.raises(NotFound, match="no session"):
            await db.add_remote(sid, None, b"\x01" * 32)
        with pytest.raises(NotFound, match="no session"):
            await db.share_log.add(
                sid, capability="read", expires_at=None, protected=False, store_url=None, key_fp=b"\x02" * 8
            )
        assert await db.remote(sid) is None and await db.share_log.list(sid) == []
    finally:
        await db.close()
