"""The sessions being closed to questions: deleted (`rm`, the clean-up, expiry's, an import's rollback: all of them
the daemon's Operations.delete_session), ended (`end`, an expiry: Operations._end) or revoked (a pull, a `verify`
or a `rekey` that learns that another device rekeyed the session without this one: StatusChanges.mark_revoked).
Each marks its session from before its transaction until after its commit, or its failure; a delete not while it
waits for the session's push (a store that is down makes that minutes: a question does not wait for a store). A
transaction's rows are committed a turn of the loop after it (groupcommit.py), and a read of committed state
meanwhile still finds the session there, active and writable: a question to its model that came then would ask
the model, spend the user's tokens, and fail to record the answer (the session gone, ended: an ended session's
history is final, or revoked: nothing written here would reach another device). A question (the daemon's
complete.py, its OpenAI endpoint) waits for what is under way on its session (`settled`) before it reads the
session, and so reads it as that left it: gone (the API's 404, as for any session deleted), ended or revoked
(refused as such a session's question is, 409), or as it was (a clean-up that left it alone, its model
answering), and the model asked only then. A close whose task is cancelled while it waits for its commit (the
daemon stopping, the clean-up or a pull cancelled) keeps its mark until the batch its rows are in has committed or
failed: the rows commit all the same, and a question let go before that would read the session as it was. The
Database owns the one instance (`db.closing`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

log = logging.getLogger("sessiond.complete")


class Closing:
    def __init__(self, batch: Callable[[], asyncio.Future[None] | None] = lambda: None) -> None:
        self._under_way: dict[str, list[asyncio.Event]] = {}  # per session, one for each close under way
        self._batch = batch  # the write batch under way, if any (GroupCommit.batch): its commit not made yet

    @contextlib.contextmanager
    def marked(self, sid: str) -> Iterator[None]:
        """Around a delete, an end or a revocation of session `sid`, from before its transaction until it is
        committed (or failed). Left by an exception (a cancellation while it waits for its commit) while a
        batch is under way, the mark is let go only once that batch has ended: its rows may be in it."""
        done = asyncio.Event()
        self._under_way.setdefault(sid, []).append(done)
        later = False
        try:
            yield
        except BaseException:
            batch = self._batch()
            if batch is not None and not batch.done():
                batch.add_done_callback(lambda _: self._release(sid, done))
                later = True
            raise
        finally:
            if not later:
                self._release(sid, done)

    def _release(self, sid: str, done: asyncio.Event) -> None:
        marks = self._under_way[sid]
        marks.remove(done)
        if not marks:
            del self._under_way[sid]
        done.set()

    async def settled(self, sid: str) -> None:
        """Wait for the deletes, ends and revocations of session `sid` under way, if any, to end. Returns with
        no turn of the loop between its last look and the caller's next step: a read of the session right
        after it sees what they did. (One that begins after it finds the question under way: the clean-up
        leaves the session alone, its model answering (Answering.busy); `rm` deletes it, `end` ends it and a
        revocation revokes it, its answer not recorded.)"""
        if sid not in self._under_way:
            return
        log.info(
            "a question waits for its session's delete, end or revocation under way",
            extra={"session": sid, "event": "complete.waits_closing"},
        )
        while marks := self._under_way.get(sid):
            await marks[-1].wait()
