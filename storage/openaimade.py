"""The sessions OpenAI-endpoint requests made (naming none) whose ids their apps were not given yet (table
`openai_made`, migration 39), with the lamports of the request's messages: what a start after a kill -9 deletes when
they hold nothing else (daemon/openai_cut.py drop_left), as the request would have had its model failed it or its app
left (drop_made). A request that ends, however, or a stream whose head (which names the session) is about to be sent,
no longer needs its row. This device's only, never synced; a session's row goes with it."""

from __future__ import annotations

from .connections import Connections
from .groupcommit import Transaction
from .messages import Also


class OpenaiMade:
    def __init__(self, c: Connections):
        self.c = c

    @staticmethod
    async def made(tx: Transaction, sid: str) -> None:
        """Session `sid`, made by a request (Database.create_session `also`): noted in its creating transaction, with
        no lamports of the request's yet (first past last: any message in it is written beside them), which its
        question's append (`making`) replaces. Was: noted first in that append's, and a kill before it (the session
        made, its question not recorded) kept an empty "openai app" session for good, the SDK's retry making another."""
        await tx.execute(
            "INSERT OR REPLACE INTO openai_made(session_id, first_lamport, last_lamport)"
            " SELECT id, lamport + 1, lamport FROM sessions WHERE id=?",
            (sid,),
        )

    def making(self, sid: str, n: int) -> Also:
        """Session `sid`, made by a request whose `n` messages the append this is given to records (Database.
        append_messages `also`): noted in that append's transaction, with the lamports its messages take, the
        session's clock's next `n` (what came before them in it, a compaction's op, is applied by then: its row's
        lamport is theirs less one). Was: a transaction of its own after the question's, and a kill between the two
        (the provider asked, the app given nothing) kept the session holding the question alone for good."""

        async def note(tx: Transaction) -> None:
            await tx.execute(
                "INSERT OR REPLACE INTO openai_made(session_id, first_lamport, last_lamport)"
                " SELECT id, lamport + 1, lamport + ? FROM sessions WHERE id=?",
                (n, sid),
            )

        return note

    async def given(self, sid: str) -> None:
        """Session `sid`'s id given to its app (or its request ended): no start deletes it."""
        await self.c.write("DELETE FROM openai_made WHERE session_id=?", (sid,))

    async def left(self) -> list[tuple[str, tuple[int, int]]]:
        """The sessions a kill -9 left made and not given, each with its request's lamports."""
        rows = await self.c.committed.fetchall("SELECT session_id, first_lamport, last_lamport FROM openai_made")
        return [(r[0], (r[1], r[2])) for r in rows]
