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
failed: the rows commit all the same, and a question let go before that would read the session as it was. A
revocation is marked from earlier still, as a `check`: from the moment a pull (a `verify`, a `rekey`) finds a
rekey notice that leaves this device out (it holds no box for it) and checks it against the store, until it has
marked the session revoked (sync/rekey.py confirm): a question that came during those store reads asked the model,
and its answer was refused, or recorded before the revocation, where no other device would read it. A check can
end in a forgery refused (the session writable still), and its reads wait for a store, so a question waits for
checks alone CHECK_WAIT seconds at most, then goes on as it would have; a pull that finds no such notice marks
nothing. The Database owns the one instance (`db.closing`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

log = logging.getLogger("sessiond.complete")

# the seconds a question waits at most for checks of a rekey notice that leaves this device out (store reads)
CHECK_WAIT = 5.0


class Closing:
    def __init__(self, batch: Callable[[], asyncio.Future[None] | None] = lambda: None) -> None:
        # per session, one for each close under way: (its end, whether it is a check: waited for CHECK_WAIT)
        self._under_way: dict[str, list[tuple[asyncio.Event, bool]]] = {}
        self._batch = batch  # the write batch under way, if any (GroupCommit.batch): its commit not made yet

    @contextlib.contextmanager
    def marked(self, sid: str, *, check: bool = False) -> Iterator[None]:
        """Around a delete, an end or a revocation of session `sid`, from before its transaction until it is
        committed (or failed). Left by an exception (a cancellation while it waits for its commit) while a
        batch is under way, the mark is let go only once that batch has ended: its rows may be in it. `check`:
        around a check that may end in a revocation (its store reads, then the revocation), which a question
        waits for CHECK_WAIT seconds at most."""
        done = asyncio.Event()
        self._under_way.setdefault(sid, []).append((done, check))
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
        marks[:] = [m for m in marks if m[0] is not done]
        if not marks:
            del self._under_way[sid]
        done.set()

    async def settled(self, sid: str) -> None:
        """Wait for the deletes, ends and revocations of session `sid` under way, if any, to end. Returns with
        no turn of the loop between its last look and the caller's next step: a read of the session right
        after it sees what they did. (One that begins after it finds the question under way: the clean-up
        leaves the session alone, its model answering (Answering.busy); `rm` deletes it, `end` ends it and a
        revocation revokes it, its answer not recorded.) Checks alone under way are waited for CHECK_WAIT
        seconds in all, then left to go on."""
        if sid not in self._under_way:
            return
        log.info(
            "a question waits for its session's delete, end or revocation under way",
            extra={"session": sid, "event": "complete.waits_closing"},
        )
        loop = asyncio.get_running_loop()
        until = loop.time() + CHECK_WAIT
        while marks := self._under_way.get(sid):
            firm = [done for done, check in marks if not check]
            if firm:
                await firm[-1].wait()
                continue
            try:
                await asyncio.wait_for(marks[-1][0].wait(), until - loop.time())
            except TimeoutError:
                if any(not check for _, check in self._under_way.get(sid, ())):
                    continue  # a revocation the check began meanwhile: waited for to its end, as any close
                log.info(
                    "a question goes on: the check of a rekey notice leaving this device out takes too long",
                    extra={"session": sid, "event": "complete.check_slow"},
                )
                return
