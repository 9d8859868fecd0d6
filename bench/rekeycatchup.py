"""A device away while a shared session was rekeyed k times catches up: how long, and how many store reads.

Two devices in this process (the sync engine, as tests/devices.py makes them), over a folder store, or the S5
portal stand-in (tests/servers/s5portal.py, served from its own thread on loopback). A shares a session with B
(a writer), B is not running while A rekeys k times (a message after each); then A stops, and B's one pull is
timed (`sessiond sync --wait` makes one: it takes every notice of the chain, a generation at a time,
sync/follower.py). Counted on B: members slots read (Members.read_slot), the object reads and head reads of
its store, the notices taken, its pushes (Pusher.push called) and the revisions of its log they wrote (each a manifest
and a head written: `sync.pushed`). Prints JSON: per store, per k, those counts and seconds.

BENCH_REKEYS (default "8,12,16,30,60"), BENCH_STORES (default "folder,s5").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))  # (the S5 portal stand-in)
from _util import remove

from sessiond.storage.database import Database
from sessiond.stores import FileStore, Store
from sessiond.stores.s5 import S5Store
from sessiond.sync.engine import Syncer
from sessiond.sync.errors import ImportError_
from sessiond.sync.manifest import CLAIMS_KEPT

REKEYS = [int(k) for k in os.environ.get("BENCH_REKEYS", "8,12,16,30,60").split(",")]
STORES = os.environ.get("BENCH_STORES", "folder,s5").split(",")
LINKS = os.environ.get("BENCH_LINKS", "1") != "0"


class Forget:
    """In place of NoticeCheck.links with BENCH_LINKS=0: keeps nothing."""

    def pop(self, _key, default=None):
        return default

    def __setitem__(self, _key, _value) -> None:
        pass


class Counts:
    """Reads of the store classes' objects and heads, and of members slots, while `on`."""

    def __init__(self) -> None:
        self.on = False
        self.n = {
            "slot_reads": 0,
            "object_reads": 0,
            "head_reads": 0,
            "notices_taken": 0,
            "pushes": 0,
            "revisions_pushed": 0,
        }

    @contextlib.contextmanager
    def patched(self, syncer: Syncer):
        undo = []

        def wrap(owner, name: str, counter: str) -> None:
            real = getattr(owner, name)

            async def counted(*args, **kw):
                if self.on:
                    self.n[counter] += 1
                return await real(*args, **kw)

            setattr(owner, name, counted)
            undo.append((owner, name, real))

        for cls in (FileStore, S5Store):
            wrap(cls, "get", "object_reads")
            wrap(cls, "get_capped", "object_reads")
            wrap(cls, "get_head", "head_reads")
        wrap(syncer.members, "read_slot", "slot_reads")
        wrap(syncer.pusher, "push", "pushes")
        real_event = syncer.ctx.on_event

        def on_event(ev: dict) -> None:
            if self.on and ev.get("type") == "sync.pushed":
                self.n["revisions_pushed"] += 1
            real_event(ev)

        syncer.ctx.on_event = on_event
        real_take = syncer.rekeyer.take

        async def take(*args, **kw):
            took = await real_take(*args, **kw)
            if self.on and took:
                self.n["notices_taken"] += 1
            return took

        syncer.rekeyer.take = take  # type: ignore[method-assign]
        try:
            yield
        finally:
            syncer.ctx.on_event = real_event
            syncer.rekeyer.take = real_take  # type: ignore[method-assign]
            for owner, name, real in reversed(undo):
                if isinstance(owner, type):
                    setattr(owner, name, real)
                else:
                    delattr(owner, name)


async def one(k: int, make_store, tmp: str, rekeyers: int = 1) -> dict:
    """B away through k rekeys, made in turn by `rekeyers` writers (A, then C, D, ...: each claims its own, of which
    its log keeps the last 16), then B's one pull."""
    names = ["a", "b", *"cdefgh"[: rekeyers - 1]]
    dbs = [await Database.open(os.path.join(tmp, f"{n}.sqlite")) for n in names]
    sy = [Syncer(db, make_store(n), os.path.join(tmp, f"k{n}"), timeout=30) for db, n in zip(dbs, names, strict=True)]
    a, b, turn = sy[0], sy[1], [sy[0], *sy[2:]]
    try:
        for who in turn:  # (B is not started: nothing of it runs but its one pull)
            await who.start()
        sid = (await dbs[0].create_session({"name": "rekeyed often"}))["id"]
        await dbs[0].append_messages(sid, [{"role": "user", "content": "first"}])
        for other in sy[1:]:
            await other.import_code((await a.share(sid, write=True, passphrase=None, expires_in=None))["code"], None)
        await dbs[1].append_messages(sid, [{"role": "user", "content": "from b"}])
        for i in range(k):
            who = turn[i % len(turn)]
            if len(turn) > 1:
                await who.pull(sid)  # (the rekeys before, by the others, taken)
            await who.rekey(sid)
            await dbs[sy.index(who)].append_messages(sid, [{"role": "user", "content": f"after rekey {i}"}])
            await who.sync_now(sid, wait=True, timeout=60)
        for other in turn:
            await other.pull(sid)
            assert (await other.sync_now(sid, wait=True, timeout=60))["complete"]
        await a.pull(sid)
        for other in turn:
            await other.stop()
        counts = Counts()
        if not LINKS:
            b.rekeyer.check.links = Forget()  # type: ignore[assignment]
        with counts.patched(b):
            counts.on = True
            began = time.perf_counter()
            error = None
            try:
                await b.pull(sid)
            except ImportError_ as exc:  # (a device too far behind is refused: said so, with the counts)
                error = f"{exc.kind}: {str(exc)[:160]}"
            seconds = time.perf_counter() - began
            counts.on = False
        got = [m["content"] for m in await dbs[1].list_messages(sid, limit=1000)]
        want = [m["content"] for m in await dbs[0].list_messages(sid, limit=1000)]
        converged = b.ctx.keys.session_key(sid) == a.ctx.keys.session_key(sid) and all(w in got for w in want)
        row = {
            "rekeys_behind": k,
            "rekeyers": rekeyers,
            "seconds": round(seconds, 3),
            "converged_in_one_pull": converged,
            **counts.n,
        }
        return {**row, "error": error} if error else row
    finally:
        for s in sy:
            await s.stop()
        for db in dbs:
            await db.close()


async def run(kind: str, k: int, rekeyers: int) -> dict:
    tmp = tempfile.mkdtemp(prefix="sd-bench-rekeycatchup-")
    try:
        if kind == "folder":
            path = os.path.join(tmp, "store")
            return await one(k, lambda _n: FileStore(path), tmp, rekeyers)
        from servers.s5portal import Portal, Threaded, make_app

        portal = Portal()
        server = Threaded(make_app(portal)).start()
        portal.authority = f"127.0.0.1:{server.port}"
        url = f"s5+http://{portal.authority}"

        def s5(n: str) -> Store:
            return S5Store(url, account_seed=n.encode() * 32, token_dir=os.path.join(tmp, f"tokens-{n}"))

        try:
            return await one(k, s5, tmp, rekeyers)
        finally:
            server.stop()
    finally:
        remove(tmp)


async def main() -> None:
    out: dict = {"rekeys": REKEYS, "stores": {}}
    for kind in STORES:
        rows = []
        for k in REKEYS:
            # one device rekeying; and past the claims its log keeps, as few devices as keep every notice claimed
            for rekeyers in [1] if k <= CLAIMS_KEPT else [1, -(-k // CLAIMS_KEPT)]:
                rows.append(await run(kind, k, rekeyers))
                print(json.dumps({kind: rows[-1]}), file=sys.stderr)
        out["stores"][kind] = rows
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
