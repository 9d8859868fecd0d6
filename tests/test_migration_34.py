"""Migration 34: the tokens a fork 0.36.0 made says it copied (its provenance's `copied_tokens`, which the statistics
of several sessions subtract, counting the copied history once: where it was spent) recounted as the quota counts
them now. 0.36.0 counted a request for several answers (OpenAI's `n`) that was copied at the answer's own tokens and
its prompt's, not what the provider billed for all the answers (migration 33 recounted each session's quota use so):
the fork's total then held the billed extra, its copied tokens did not, and `stats` counted that extra twice."""

from __future__ import annotations

import json
import sqlite3

from sessiond.storage.database import Database
from sessiond.storage.migrations import SCHEMA_VERSION
from test_migration_30 import _version

N_ANSWER = {"tokens": 5, "usage": {"prompt_tokens": 10, "completion_tokens": 27}}  # three answers billed, one kept


async def test_a_fork_0_36_made_of_an_n_answer_is_counted_once_in_the_statistics(tmp_path):
    assert SCHEMA_VERSION >= 34
    path = str(tmp_path / "sessions.db")
    db = await Database.open(path)
    try:
        sid = (await db.create_session({"name": "n answers"}))["id"]
        await db.append_messages(sid, [{"role": "user", "content": "count", "tokens": 2}])
        [answer] = await db.append_messages(sid, [{"role": "assistant", "content": "one", **N_ANSWER}], answer=True)
        await db.append_messages(sid, [{"role": "user", "content": "after the fork point", "tokens": 4}])
        old = (await db.fork(sid, answer["id"]))["id"]  # made by 0.36.0: its copied tokens set below
        new = (await db.fork(sid, answer["id"]))["id"]  # made since: counted as now
        assert (await db.stats())["tokens"] == 2 + 10 + 27 + 4  # each fork's copy counted once
    finally:
        await db.close()
    conn = sqlite3.connect(path)
    with conn:  # as 0.36.0 wrote it: the copied answer's own tokens and its prompt's; at schema 33
        [(prov,)] = conn.execute("SELECT provenance FROM sessions WHERE id=?", (old,)).fetchall()
        conn.execute(
            "UPDATE sessions SET provenance=? WHERE id=?", (json.dumps({**json.loads(prov), "copied_tokens": 17}), old)
        )
        conn.execute("UPDATE schema_version SET version=33")
    conn.close()
    for _ in range(2):  # (the second open finds it done)
        db = await Database.open(path)
        try:
            for fork in (old, new):
                assert (await db.get_session(fork))["provenance"]["copied_tokens"] == 2 + 10 + 27, fork
            assert (await db.stats())["tokens"] == 2 + 10 + 27 + 4  # was 2 + 10 + 27 + 4 + 22, the extra twice
        finally:
            await db.close()
        assert _version(path) == SCHEMA_VERSION
