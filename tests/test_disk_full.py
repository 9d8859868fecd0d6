"""A full disk: a write that meets it is refused with a clear 507 (where, and what to do), nothing of it is
stored, and the same request succeeds once there is room. The disk fills for real inside SQLite: its
writer's `max_page_count` is set to what the database holds, so the next page it needs fails exactly as
on a full disk (SQLITE_FULL, "database or disk is full")."""

from __future__ import annotations

import errno
import os
import sqlite3
from types import SimpleNamespace

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sessiond.daemon.api import make_app
from sessiond.storage import tokens
from sessiond.storage.database import Database
from sessiond.storage.errors import is_disk_full


class Home:
    def __init__(self, path: str):
        self.path = path


class NoIdleEnds:  # (Operations.shared_idle: no session's idle end waits for a pull here)
    def waiting(self, s: dict) -> None:
        return None


class Owner:  # what make_app and the message routes need of a daemon
    version = "test"
    ops = SimpleNamespace(shared_idle=NoIdleEnds())

    def __init__(self, db: Database, home: str):
        self.db = db
        self.home = Home(home)
        self.estimate = tokens.get("chars4")


async def test_an_append_on_a_full_disk_is_refused_clearly_and_changes_nothing(tmp_path):
    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    client = TestClient(TestServer(make_app(Owner(db, str(tmp_path)))))
    await client.start_server()
    try:
        r = await client.post("/v1/sessions", json={"id": "s1"})
        assert r.status == 201
        r = await client.post("/v1/sessions/s1/messages", json={"role": "user", "content": "before"})
        assert r.status == 201
        await db.c.writer.execute("PRAGMA max_page_count=1")  # (at least the pages it has: now full)
        big = "x" * 200_000  # needs new pages (overflow pages) whatever free pages the file has
        r = await client.post("/v1/sessions/s1/messages", json={"role": "user", "content": big})
        body = await r.json()
        assert r.status == 507, body
        err = body["error"]
        assert err["code"] == "disk_full"
        assert str(tmp_path) in err["message"] and "nothing of this request was stored" in err["message"]
        assert "Free some space" in err["message"]
        assert err["details"]["owner"] == [f"free some space on the disk holding sessiond's home ({tmp_path})"], err
        r = await client.get("/v1/sessions/s1/messages")
        assert [m["content"] for m in (await r.json())["messages"]] == ["before"]
        await db.c.writer.execute("PRAGMA max_page_count=1073741823")  # room again
        r = await client.post("/v1/sessions/s1/messages", json={"role": "user", "content": big})
        assert r.status == 201
        r = await client.get("/v1/sessions/s1/messages")
        assert [m["content"] for m in (await r.json())["messages"]] == ["before", big]
    finally:
        await client.close()
        await db.close()


def test_what_counts_as_a_full_disk():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t(x)")
    conn.execute("PRAGMA max_page_count=2")
    with pytest.raises(sqlite3.OperationalError) as e:
        conn.execute("INSERT INTO t VALUES (?)", ("y" * 100_000,))
    assert is_disk_full(e.value)
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(sqlite3.OperationalError("database is locked"))
