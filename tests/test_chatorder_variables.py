"""storage/chatorder.py's merge repeats its parameters in each chat's part of the compound SELECT: a page after a
cursor takes five a chat (the session, the chat, the cursor's three), both cursors eight. SQLite before 3.32 takes
999 parameters per statement (storage/search.py sizes its statements by it, MAX_VARIABLES), and the merge refused
a page of `log --all` after a cursor, or a fork, of a session of 200 chats with 'too many SQL variables' (an
internal error, 500). Such a session is read as one of more chats than the merge takes (MAX_MERGED) is: by the
sorted query. Tested with the connections' own limit set to 999, as such a SQLite has it."""

from __future__ import annotations

import sqlite3

CHATS = 210


async def test_a_page_across_many_chats_fits_a_sqlite_of_999_parameters(db):
    for conn in (db.c._writer, db.c._reader):
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    sid = (await db.create_session({"name": "many chats"}))["id"]
    await db.append_messages(sid, [{"role": "user", "content": "first", "tokens": 1}], "main")
    for i in range(CHATS):
        await db.create_chat(sid, {"id": f"c{i}", "name": f"c{i}"})
        await db.append_messages(sid, [{"role": "user", "content": f"in c{i}", "tokens": 1}], f"c{i}")
    want = [r[0] for r in await db.read_all("SELECT content FROM messages WHERE session_id=? ORDER BY lamport", (sid,))]
    first = await db.list_messages(sid, all_chats=True, limit=10)
    assert [m["content"] for m in first] == want[:10]
    after = await db.list_messages(sid, all_chats=True, limit=10, after=first[-1]["id"])
    assert [m["content"] for m in after] == want[10:20]
    between = await db.list_messages(sid, all_chats=True, limit=500, after=first[0]["id"], before=after[-1]["id"])
    assert [m["content"] for m in between] == want[1:19]
    fork = await db.fork(sid, after[-1]["id"])
    assert fork["message_count"] == 20
