"""A daemon killed between an atomic write into its home and the rename (the home's store-url, the OpenAI
endpoint's key, a portal token in store-tokens/, a pin request id in pinning/) left the temporary file
there for good, a secret in some of them: the next start deletes them, as it deletes those of keys/."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time

import pytest

from conftest import DaemonProc, write_config
from sessiond.storage.database import Database
from sessiond.storage.migrations import SCHEMA_VERSION

LONG_AGO = time.time() - 3600


def _leftover(path: str) -> str:
    with open(path, "w") as f:
        f.write("sk-secret-left-behind\n")
    os.utime(path, (LONG_AGO, LONG_AGO))
    return path


def _temps(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith(".tmp-") or n.endswith(".tmp"))


def test_the_temporary_files_of_writes_into_the_home_cut_short_are_deleted_at_the_next_start(home):
    write_config(home, openai_listen="127.0.0.1:0")
    d = DaemonProc(home, env={"SESSIOND_CRASH_AT": "write:store-url"})  # a new home's first start: store-url
    with pytest.raises(RuntimeError):
        d.start()
    assert [n.rsplit("-", 1)[0] for n in _temps(home)] == [".tmp-store-url"]
    d.env["SESSIOND_CRASH_AT"] = "write:openai-api-key"  # the endpoint's key, made at its first start
    with pytest.raises(RuntimeError):
        d.start()  # (this start deleted the first one's)
    assert [n.rsplit("-", 1)[0] for n in _temps(home)] == [".tmp-openai-api-key"]
    for name in _temps(home):
        os.utime(os.path.join(home, name), (LONG_AGO, LONG_AGO))
    _leftover(os.path.join(home, "openai-api-key.4242.tmp"))  # the name earlier versions wrote the key under
    for sub, name in (("store-tokens", "s5-portal.token"), ("pinning", "pins-service.json")):
        os.makedirs(os.path.join(home, sub), mode=0o700, exist_ok=True)
        _leftover(os.path.join(home, sub, f".tmp-{name}-0123456789ab"))
        _leftover(os.path.join(home, sub, name))  # the file itself stays
    d.env.pop("SESSIOND_CRASH_AT")
    d.start()
    try:
        assert _temps(home) == []
        for sub, name in (("store-tokens", "s5-portal.token"), ("pinning", "pins-service.json")):
            assert os.listdir(os.path.join(home, sub)) == [name]
        assert open(os.path.join(home, "openai-api-key")).read().startswith("sk-sessiond-")
        assert d.client().status()["device_id"]
    finally:
        d.stop()


def test_a_first_start_killed_writing_the_device_key_makes_it_at_the_next(home, tmp_path):
    """The device key's creation (its seed written atomically at a home's first start) killed before the
    rename: no key and its temporary file, a secret, in keys/. The next start makes the key (nothing was
    signed with the lost one) and deletes the temporary file; sessions are made and pushed."""
    store = tmp_path / "store"
    d = DaemonProc(home, f"file://{store}", env={"SESSIOND_CRASH_AT": "write:device.key"})
    with pytest.raises(RuntimeError):
        d.start()
    keys = os.path.join(home, "keys")
    assert [n.rsplit("-", 1)[0] for n in _temps(keys)] == [".tmp-device.key"]
    assert not os.path.exists(os.path.join(keys, "device.key"))
    d.env.pop("SESSIOND_CRASH_AT")
    d.start()
    try:
        assert _temps(keys) == [] and len(open(os.path.join(keys, "device.key"), "rb").read()) == 32
        c = d.client()
        sid = c.create_session(name="after")["id"]
        c.append(sid, "user", "hello")
        assert c.sync(sid, wait=True, timeout=10)["complete"]
        assert c.verify()["ok"]
    finally:
        d.stop()


def test_a_first_start_killed_making_the_database_leaves_it_empty_and_the_next_open_makes_it_whole(home):
    """A new database is made in one transaction (storage/schema.py create_fresh): a first start killed before its
    commit leaves an empty database (its WAL's frames not committed), which the next open makes whole, not one with
    part of the schema, which no version could open (the migrations would find tables there already)."""
    d = DaemonProc(home, env={"SESSIOND_CRASH_AT": "schema:fresh"})
    with pytest.raises(RuntimeError):
        d.start()
    assert d.proc is not None and d.proc.returncode == 137  # (killed there: storage/errors.py crash_at)
    path = os.path.join(home, "sessions.db")
    assert os.path.exists(path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchall() == [(0,)]
    finally:
        conn.close()

    async def reopened() -> None:
        db = await Database.open(path)  # (in process: the daemon's next start opens it so, first)
        try:
            assert await db.schema_version() == SCHEMA_VERSION
            sid = (await db.create_session({"name": "after", "tags": ["t"]}))["id"]
            assert [s["id"] for s in await db.list_sessions(tag="t")] == [sid]
        finally:
            await db.close()

    asyncio.run(reopened())
