"""A session's statistics keep their walk with a write of the read (storage/chatstats.py): where writes are
refused the numbers are to be answered still, the walk not kept. It named DiskFull, which no storage code raises
(the route makes it of SQLite's error for the answer only): on a full disk the statistics answered 507 disk_full.
The disk fills for real inside SQLite, as in test_disk_full.py: the writer's max_page_count set to the pages the
database holds, so the walk's rows, needing new pages, fail as on a full disk (SQLITE_FULL)."""

from __future__ import annotations

import os

from aiohttp.test_utils import TestClient, TestServer

from sessiond.daemon.api import make_app
from sessiond.storage.database import Database
from test_disk_full import Owner

CHATS = 120  # (a walk's row each: more than the table's one page holds)


async def test_a_sessions_stats_on_a_full_disk_are_answered(tmp_path):
    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    client = TestClient(TestServer(make_app(Owner(db, str(tmp_path)))))
    await client.start_server()
    try:
        sid = (await db.create_session({}))["id"]
        for i in range(CHATS):
            chat = f"chat-{i:04d}-with-a-name-long-enough-to-fill-pages"
            await db.create_chat(sid, {"id": chat, "name": chat})
            await db.append_messages(sid, [{"role": "user", "content": "q"}], chat)
        await db.c.writer.execute("PRAGMA max_page_count=1")  # (at least the pages it has: now full)
        r = await client.get(f"/v1/stats?session={sid}")
        body = await r.json()
        assert r.status == 200, body
        assert sum(c["messages"] for c in body["per_chat"]) == CHATS
        kept = await db.read_one("SELECT count(*) FROM chat_walks WHERE session_id=?", (sid,))
        assert kept[0] == 0  # (the walk not kept: the next statistics walk again)
        await db.c.writer.execute("PRAGMA max_page_count=1073741823")  # room again: kept
        r = await client.get(f"/v1/stats?session={sid}")
        assert r.status == 200 and (await db.read_one("SELECT count(*) FROM chat_walks"))[0] == CHATS
    finally:
        await client.close()
        await db.close()
