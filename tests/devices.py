"""Two devices in one process, A and B: each a real database and a `Syncer`, over one store (a folder
by default, or the stores a test gives each side). A writes and shares, B imports and follows. The
`devices` fixture (conftest.py) closes both however a test ends."""

from __future__ import annotations

import asyncio
import os

from sessiond.storage.database import Database
from sessiond.stores import FileStore, Store
from sessiond.sync.engine import Syncer


class Devices:
    def __init__(self, tmp: str):
        self.tmp = tmp
        self.store_path = os.path.join(tmp, "store")  # the folder both sides' default stores share
        self.syncers: list[Syncer] = []
        self.dbs: list[Database] = []

    async def open(
        self,
        *,
        a: dict | None = None,
        b: dict | None = None,
        store_a: Store | None = None,
        store_b: Store | None = None,
    ) -> tuple[Syncer, Syncer]:
        """A and B (neither started); `a`, `b`: Syncer keyword arguments of each side (timeout 10 s by default)."""
        self.dba, self.a = await self._device("a", store_a, a or {})
        self.dbb, self.b = await self._device("b", store_b, b or {})
        return self.a, self.b

    async def _device(self, name: str, store: Store | None, kw: dict) -> tuple[Database, Syncer]:
        db = await Database.open(os.path.join(self.tmp, f"{name}.sqlite"))
        self.dbs.append(db)
        syncer = Syncer(
            db, store or FileStore(self.store_path), os.path.join(self.tmp, f"k{name}"), **{"timeout": 10, **kw}
        )
        self.syncers.append(syncer)
        return db, syncer

    async def started_share(self, name: str, *, write: bool = False) -> tuple[str, str]:
        """A and B opened, A started (B not: nothing of it runs but what a test calls), and a new session of
        A with one message shared, its code not imported yet: (session, code)."""
        await self.open()
        await self.a.start()
        sid = (await self.dba.create_session({"name": name}))["id"]
        await self.dba.append_messages(sid, [{"role": "user", "content": "a1"}])
        return sid, (await self.a.share(sid, write=write, passphrase=None, expires_in=None))["code"]

    async def shared(self, name: str, first: str = "first", *, write: bool = False) -> str:
        """A new session of A with one message, shared with B (imported there): its id."""
        sid = (await self.dba.create_session({"name": name}))["id"]
        await self.dba.append_messages(sid, [{"role": "user", "content": first}])
        code = (await self.a.share(sid, write=write, passphrase=None, expires_in=None))["code"]
        await self.b.import_code(code, None)
        return sid

    async def close(self) -> None:
        """Stop both sides and close their databases (once: a test may close them before its servers stop)."""
        syncers, dbs, self.syncers, self.dbs = self.syncers, self.dbs, [], []
        for s in syncers:
            await s.stop()
        for db in dbs:
            await db.close()


def count_calls(obj, name: str, *, this_task: bool = False) -> list:
    """Record each call of obj.name from now on (its first argument, or None); `this_task`: only the calls made
    in the task that asked (not the daemon's own, a poll's pull meanwhile)."""
    calls: list = []
    real = getattr(obj, name)
    task = asyncio.current_task() if this_task else None

    async def counted(*args, **kw):
        if task is None or asyncio.current_task() is task:
            calls.append(args[0] if args else None)
        return await real(*args, **kw)

    setattr(obj, name, counted)
    return calls


def count_gets(store) -> list:
    """Record each object read from `store` from now on (its hash): by get, or get_capped (a members object)."""
    calls = count_calls(store, "get")
    real = store.get_capped

    async def capped(h, *args, **kw):
        calls.append(h)
        return await real(h, *args, **kw)

    store.get_capped = capped
    return calls


def watch_pulls(syncer: Syncer) -> tuple[list[str], list[str]]:
    """The sessions the syncer's follower starts pulling, and those whose pull ended (either way), from now on."""
    started: list[str] = []
    finished: list[str] = []
    real_pull = syncer.follower.pull

    async def pull(sid, *changed):
        started.append(sid)
        try:
            return await real_pull(sid, *changed)
        finally:
            finished.append(sid)

    syncer.follower.pull = pull  # type: ignore[method-assign]  # the worker pulls through its follower
    return started, finished
