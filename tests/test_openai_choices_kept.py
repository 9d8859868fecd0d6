"""The other answers of the OpenAI endpoint's latest request for several (`n`) of each chat, kept in the database
(storage/openaichoices.py, migration 37): a chat's are its latest request's alone, one forgotten once an app went
on from it, a session's gone with it, and all of them bounded (the oldest forgotten)."""

from __future__ import annotations

from sessiond.storage import openaichoices
from sessiond.storage.database import Database


async def test_kept_per_chat_forgotten_with_the_session_and_bounded(tmp_path, monkeypatch):
    db = await Database.open(str(tmp_path / "sessions.db"))
    try:
        kept = db.openai_choices
        sid = (await db.create_session({}))["id"]
        other = (await db.create_session({}))["id"]
        await kept.remember(sid, "main", b"first", [b"a", b"b"])
        await kept.remember(sid, "main", b"again", [b"c"])  # the chat's latest request: in place of the earlier
        assert [await kept.holds(sid, "main", r, o) for r, o in ((b"first", b"a"), (b"again", b"c"))] == [False, True]
        assert not await kept.holds(sid, "side", b"again", b"c") and not await kept.holds(other, "main", b"again", b"c")
        await kept.forget(sid, "main", b"c")  # went on from: charged next time
        assert not await kept.holds(sid, "main", b"again", b"c")
        await kept.remember("gone", "main", b"first", [b"a"])  # a session deleted meanwhile: nothing kept
        await kept.remember(sid, "main", b"first", [b"a"])
        await db.delete_session(sid)
        assert await db.read_all("SELECT * FROM openai_choices") == []
        monkeypatch.setattr(openaichoices, "MOST_ROWS", 3)
        for i in range(4):
            await kept.remember(other, f"chat{i}", b"first", [b"a"])
        held = [await kept.holds(other, f"chat{i}", b"first", b"a") for i in range(4)]
        assert held == [False, True, True, True], held
    finally:
        await db.close()
