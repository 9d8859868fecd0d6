"""Reads see every committed write, even after reads were cancelled half-way.

An unfinished SELECT keeps its connection's read snapshot; before every query ran and closed its
cursor inside the database thread, a read cancelled between execute and close left one open, and
from then on the read connection showed the database as it was. Under load that surfaced as
`create` answering 404 for the session it had just created (bench/load.py), and as torn pushes."""

from __future__ import annotations

import asyncio
import os
import random

from sessiond.storage.database import Database


async def test_cancelled_reads_do_not_pin_an_old_snapshot(tmp_path):
    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    try:
        base = (await db.create_session({}))["id"]
        await db.append_messages(base, [{"role": "user", "content": "x"}] * 50)
        rng = random.Random(1)
        for _ in range(300):
            readers = [asyncio.ensure_future(db.list_messages(base)) for _ in range(3)] + [
                asyncio.ensure_future(db.get_session(base)) for _ in range(3)
            ]
            for _ in range(rng.randint(0, 6)):
                await asyncio.sleep(0)  # cancel at every stage: queued, executing, fetching, closing
            for t in readers:
                t.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            sid = (await db.create_session({}))["id"]  # reads the new session back: a 404 before the fix
            await db.append_messages(sid, [{"role": "user", "content": "y"}])
            assert len(await db.list_messages(sid)) == 1
    finally:
        await db.close()
