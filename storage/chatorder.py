"""A session's messages read in their global order (lamport, device, seq) across its chats, as a merge of each
chat's range of the `messages_order` index (session, chat, lamport, device, seq): SQLite's MERGE (UNION ALL)
of one index scan per chat, each read only as far as the merge takes it. Without a chat in the WHERE clause
the index gives the session's messages chat by chat, and SQLite read every one of them, sorted them in a
temporary B-tree, and kept the first few: a page of `log --all`, or a fork at the 101st of 100,000 messages,
cost as much as reading the whole session (bench/scale.py).

The chats are those the messages name, found by a skip-scan of the same index (one seek per chat): a
message may name a chat whose creation has not arrived from its device yet."""

from __future__ import annotations

import itertools
import re
from typing import Any

# SQLite refuses a compound SELECT of more than 500 parts (SQLITE_MAX_COMPOUND_SELECT): a session of more
# chats is read as before, by one sorted query. (Its parameters, each given once, stay within the 999 a
# statement of SQLite before 3.32 takes.)
MAX_MERGED = 400

_CHATS = (
    "WITH RECURSIVE c(id) AS (SELECT min(chat_id) FROM messages WHERE session_id=?"
    " UNION ALL SELECT (SELECT min(chat_id) FROM messages WHERE session_id=? AND chat_id>c.id) FROM c"
    " WHERE c.id IS NOT NULL) SELECT id FROM c WHERE id IS NOT NULL"
)


async def message_chats(q: Any, sid: str) -> list[str]:
    """The chats session `sid`'s messages name, one index seek each."""
    return [r[0] for r in await q.fetchall(_CHATS, (sid, sid))]


async def in_order(
    q: Any, sid: str, columns: str, where: str = "", args: tuple = (), *, desc: bool = False, limit: int | None = None
) -> list:
    """Rows of `columns` (which name lamport, device_id and seq, or are `*`) of session `sid`'s messages, every
    chat's, in global order (`desc`: latest first), those matching `where` (an SQL condition on the message's
    own columns, `?` its `args`), the first `limit`. Reads each chat's messages by the index, only as far as the
    merge goes."""
    chats = await message_chats(q, sid)
    if not chats:
        return []
    d = " DESC" if desc else ""
    order_by = f" ORDER BY lamport{d}, device_id{d}, seq{d}" + (" LIMIT ?" if limit is not None else "")
    cond = f" AND {where}" if where else ""
    last = (limit,) if limit is not None else ()
    if len(chats) > MAX_MERGED:
        return await q.fetchall(
            f"SELECT {columns} FROM messages WHERE session_id=?{cond}{order_by}", (sid, *args, *last)
        )
    # numbered parameters, each given once (?1 the session, then `where`'s, then one chat a part, then the limit):
    # repeated in each part, they were 5 a chat past a cursor, 8 between two, and SQLite before 3.32 takes 999
    # a statement (a page of 125 chats refused: 'too many SQL variables')
    numbers = itertools.count(2)
    cond = re.sub(r"\?(?!\d)", lambda _: f"?{next(numbers)}", cond)
    first = 2 + len(args)
    parts = [
        f"SELECT {columns} FROM messages WHERE session_id=?1 AND chat_id=?{first + i}{cond}" for i in range(len(chats))
    ]
    order_by = order_by.replace(" LIMIT ?", f" LIMIT ?{first + len(chats)}")
    return await q.fetchall(" UNION ALL ".join(parts) + order_by, (sid, *args, *chats, *last))
