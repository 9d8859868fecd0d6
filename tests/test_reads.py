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


async def test_committed_reads_between_transactions_run_on_the_writer(tmp_path):
    """A read of committed state made while nothing is open on the writer runs on it, whose page cache its
    own commits keep (the reader's is discarded by each of them); while a transaction is open it runs on
    the read-only connection, and does not see that transaction's writes."""
    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    try:
        sid = (await db.create_session({"name": "before"}))["id"]
        await db.append_messages(sid, [{"role": "user", "content": "x"}])
        on: dict[str, list[str]] = {"writer": [], "reader": []}
        db.c._writer.set_trace_callback(on["writer"].append)
        db.c._reader.set_trace_callback(on["reader"].append)
        assert (await db.get_session(sid))["name"] == "before"
        assert [s for s in on["writer"] if s.startswith("SELECT")] and not on["reader"]
        on["writer"].clear()
        async with db.c.transaction() as tx:
            await tx.execute("UPDATE sessions SET name='during' WHERE id=?", (sid,))
            row = await db.c.committed.fetchone("SELECT name FROM sessions WHERE id=?", (sid,))
            assert row is not None and row[0] == "before"  # the transaction under way is not seen
            assert on["reader"] == ["SELECT name FROM sessions WHERE id=?".replace("?", f"'{sid}'")]
        assert (await db.c.committed.fetchone("SELECT name FROM sessions WHERE id=?", (sid,)))[0] == "during"
    finally:
        await db.close()
