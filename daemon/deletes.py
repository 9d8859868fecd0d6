"""The sessions being deleted: each delete (`rm`, the clean-up, expiry's, an import's rollback: all of them
Operations.delete_session) marks its session from before its transaction until after its commit, or its
failure. A delete's rows are committed a turn of the loop after its transaction (storage/groupcommit.py),
and a read of committed state meanwhile still finds the session: a question to its model that came then
would ask the model, spend the user's tokens, and fail to record the answer. A question (complete.py, the
OpenAI endpoint) waits for the deletes of its session under way (`settled`) before it reads the session,
and so reads it as they left it: gone (the API's 404, as for any session deleted), or there (a clean-up
that left it alone, its model answering), and the model asked only then."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

log = logging.getLogger("sessiond.complete")


class Deletes:
    def __init__(self) -> None:
        self._under_way: dict[str, list[asyncio.Event]] = {}  # per session, one for each of its deletes under way

    @contextlib.contextmanager
    def marked(self, sid: str) -> Iterator[None]:
        """Around a delete of session `sid`, from before its transaction until it is committed (or failed)."""
        done = asyncio.Event()
        self._under_way.setdefault(sid, []).append(done)
        try:
            yield
        finally:
            marks = self._under_way[sid]
            marks.remove(done)
            if not marks:
                del self._under_way[sid]
            done.set()

    async def settled(self, sid: str) -> None:
        """Wait for the deletes of session `sid` under way, if any, to end. Returns with no turn of the loop
        between its last look and the caller's next step: a read of the session right after it sees what they
        did. (A delete that begins after it finds the question under way: the clean-up leaves the session
        alone, its model answering (Answering.busy); `rm` deletes it, the answer with it.)"""
        if sid not in self._under_way:
            return
        log.info(
            "a question waits for its session's delete under way",
            extra={"session": sid, "event": "complete.waits_delete"},
        )
        while marks := self._under_way.get(sid):
            await marks[-1].wait()
