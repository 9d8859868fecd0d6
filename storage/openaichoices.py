"""The other answers of the OpenAI endpoint's latest request for several (OpenAI's `n`) of each chat (table
`openai_choices`, migration 37; daemon/openai_choices.py says what they are for): by session and chat, the digest of
the answer recorded and the digest of each other one an app may go on from, charged nothing once. Kept in the
database, not the daemon's memory: an app going on after a restart is not charged again what the provider billed
with the request. A chat's rows are those of its latest such request alone, all of them MOST_ROWS at most (the oldest
forgotten past it: then charged as any message the app sends); a session's go with it. This device's only, never
synced."""

from __future__ import annotations

from collections.abc import Iterable

from .connections import Connections
from .groupcommit import Transaction
from .messages import Also

MOST_ROWS = 1 << 14  # the other answers kept, every chat's together (the oldest forgotten past it)
MOST_OTHERS = 128  # of one request (OpenAI's `n` is 128 at most: more are not kept)


class OpenaiChoices:
    def __init__(self, c: Connections):
        self.c = c

    def remembering(self, sid: str, chat: str, recorded: bytes, others: Iterable[bytes]) -> Also:
        """A request for several answers to `chat` of `sid`, whose first was recorded with the text of digest
        `recorded`, the others' digests `others`: kept in place of the chat's earlier ones, in the transaction that
        records that first answer (Database.append_messages `also`)."""
        rows = [(sid, chat, recorded, o) for o in sorted(set(others))[:MOST_OTHERS]]

        async def remember(tx: Transaction) -> None:
            await tx.execute("DELETE FROM openai_choices WHERE session_id=? AND chat_id=?", (sid, chat))
            await tx.executemany(
                "INSERT OR IGNORE INTO openai_choices(session_id, chat_id, recorded, other) VALUES (?,?,?,?)", rows
            )
            await tx.execute(
                "DELETE FROM openai_choices WHERE rowid <= "
                "(SELECT rowid FROM openai_choices ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
                (MOST_ROWS,),
            )

        return remember

    async def remember(self, sid: str, chat: str, recorded: bytes, others: Iterable[bytes]) -> None:
        """`remembering` in a transaction of its own (nothing, for a session deleted meanwhile)."""
        async with self.c.transaction() as tx:
            if await tx.fetchone("SELECT 1 FROM sessions WHERE id=?", (sid,)) is not None:
                await self.remembering(sid, chat, recorded, others)(tx)

    async def holds(self, sid: str, chat: str, recorded: bytes, other: bytes) -> bool:
        """Whether `other` is another answer of `chat`'s latest request for several, whose first was recorded with
        the text of digest `recorded`."""
        row = await self.c.committed.fetchone(
            "SELECT 1 FROM openai_choices WHERE session_id=? AND chat_id=? AND other=? AND recorded=?",
            (sid, chat, other, recorded),
        )
        return row is not None

    def forgetting(self, sid: str, chat: str, other: bytes) -> Also:
        """`other`, recorded as the next message charged nothing: another going on from it is charged. Written in
        that message's append (Database.append_messages `also`): a kill between the two left it remembered, and the
        next going on from it was charged nothing too."""

        async def forget(tx: Transaction) -> None:
            await tx.execute(
                "DELETE FROM openai_choices WHERE session_id=? AND chat_id=? AND other=?", (sid, chat, other)
            )

        return forget

    async def forget(self, sid: str, chat: str, other: bytes) -> None:
        """`forgetting` in a transaction of its own."""
        async with self.c.transaction() as tx:
            await self.forgetting(sid, chat, other)(tx)
