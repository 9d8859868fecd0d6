"""The sessions OpenAI-endpoint requests made (naming none) whose ids their apps were not given yet (table
`openai_made`, migration 39), with the lamports of the request's messages: what a start after a kill -9 deletes when
they hold nothing else (daemon/openai_cut.py drop_left), as the request would have had its model failed it or its app
left (drop_made). A request that ends, however, or a stream whose head (which names the session) is about to be sent,
no longer needs its row. This device's only, never synced; a session's row goes with it."""

from __future__ import annotations

from .connections import Connections


class OpenaiMade:
    def __init__(self, c: Connections):
        self.c = c

    async def made(self, sid: str, lamports: tuple[int, int]) -> None:
        """Session `sid`, made by a request whose messages, recorded, have the lamports `lamports` (first, last)."""
        await self.c.write(
            "INSERT OR REPLACE INTO openai_made(session_id, first_lamport, last_lamport) SELECT id, ?, ? FROM sessions"
            " WHERE id=?",
            (*lamports, sid),
        )

    async def given(self, sid: str) -> None:
        """Session `sid`'s id given to its app (or its request ended): no start deletes it."""
        await self.c.write("DELETE FROM openai_made WHERE session_id=?", (sid,))

    async def left(self) -> list[tuple[str, tuple[int, int]]]:
        """The sessions a kill -9 left made and not given, each with its request's lamports."""
        rows = await self.c.committed.fetchall("SELECT session_id, first_lamport, last_lamport FROM openai_made")
        return [(r[0], (r[1], r[2])) for r in rows]
