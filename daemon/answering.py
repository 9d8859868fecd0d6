"""The questions to a model under way and the watch on their apps: `Answering` (per session, the questions
under way, so that a session's next question comes after what its apps that left caused; at the daemon's stop,
each ended with its app told so: its watch stopped, or begun stopped) and
`AppWatch` (a wait for the model cancelled when its app goes away, or when the daemon's stop says so)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from .testhooks import pause_for_tests

GONE_POLL = 0.1  # seconds between two looks at whether an app waiting for a model's answer is still there
SETTLE_WAIT = 5.0  # at most this long a question waits for the answers whose apps left to be recorded
# why a stream the daemon's stop cut ended (its app told so on its wire: `Answering.tell_at_stop`)
STOP_CUT = "the daemon is stopping (stopped by its user or the system's shutdown), which stopped the model's answer"


def app_gone(request: web.Request) -> bool:
    """Whether the app that sent `request` closed its connection (aiohttp does not cancel the handler)."""
    t = request.transport
    return t is None or t.is_closing()


def _let_end() -> None:
    """(The stop's call for a question finishing, `Answering.finishing`: nothing to stop.)"""


class Answering:
    """The questions to a model under way, per session, so that a session's next question comes after what
    its apps that left already caused: an app that stops a stream (a chat app's Stop) and sends its next
    question at once, before the daemon's next look (GONE_POLL) has seen it go, would otherwise have that
    question matched and appended first, and the part of the answer it was given recorded after it."""

    def __init__(self) -> None:
        self._by_session: dict[str, dict[int, tuple[web.Request, asyncio.Event]]] = {}
        # told a session's questions are all over (the clean-up, which left it alone meanwhile, looks again)
        self.on_done: Callable[[str], None] = lambda sid: None
        # the streams under way whose wire can say the stop before it closes (`tell_at_stop`), by request; and
        # the questions whose model's answer is in, being recorded and sent (`finishing`): let end at the stop
        self._told: dict[int, Callable[[], None]] = {}
        self.stopping = False  # the daemon's stop began (`end_all`): a watch begun after it is stopped at once

    @contextlib.asynccontextmanager
    async def under_way(self, sid: str, request: web.Request) -> AsyncIterator[None]:
        """Around a question's handling, from before its question is recorded until its answer is (or
        nothing of it will be)."""
        done = asyncio.Event()
        mine = self._by_session.setdefault(sid, {})
        mine[id(request)] = (request, done)
        try:
            yield
        finally:
            done.set()
            del mine[id(request)]
            self._told.pop(id(request), None)
            if not mine:
                del self._by_session[sid]
                self.on_done(sid)

    def busy(self, sid: str, *, but: web.Request | None = None) -> bool:
        """Whether a question to session `sid`'s model is under way (`but`: one other than that request's): its model
        answering is the session's activity, so the clean-up does not end it as idle meanwhile (operations.py)."""
        if but is None:
            return sid in self._by_session
        return any(other is not but for other, _ in self._by_session.get(sid, {}).values())

    def tell_at_stop(self, request: web.Request, stop: Callable[[], None]) -> None:
        """A stream passed on to its app whose wire has an error event (until its watch closes: `finishing`): at
        the daemon's stop, `stop()` is called instead of its connection being closed, so that the app is told the
        stop and what was kept before the stream ends (the connection closed after it, or when `end_all`'s wait is
        over)."""
        self._told[id(request)] = stop

    def finishing(self, request: web.Request) -> None:
        """A question whose watch on its model is over (`AppWatch.close`): its answer is in, recorded and sent
        now, or its end told. At the daemon's stop it is let end, within `end_all`'s wait (its connection closed
        then), not closed at once: an app given a whole answer was told that the connection broke in the middle
        of it, its record waiting for its commit. A watch of it begun after the stop is stopped at once."""
        self._told[id(request)] = _let_end

    async def end_all(self, wait: float) -> None:
        """At the daemon's stop: each question under way is ended, its app told why: one whose watch on the model
        is under way (`tell_at_stop`) is stopped so (what arrived recorded, marked interrupted); one whose model's
        answer is in (`finishing`) is let end; one whose watch has not begun (its question being recorded, its
        provider asked) is ended by that watch, begun stopped (`stopping`). Waited for up to `wait` s, then the
        connections of those still under way closed. Else the stop waited for every answer to end (aiohttp's 60 s)
        and `sessiond stop` killed the daemon first, losing what had arrived; and closing the connection of a
        question not yet watched at once told its app only that the connection broke (an SDK retried it against a
        daemon gone)."""
        self.stopping = True
        under_way = [(request, done) for mine in self._by_session.values() for request, done in mine.values()]
        for request, _ in under_way:
            told = self._told.pop(id(request), None)
            if told is not None:
                told()
            # (else its watch has not begun: begun after `stopping` is set, it is stopped at once, its app told so)
        waits = [asyncio.ensure_future(done.wait()) for _, done in under_way if not done.is_set()]
        if waits:
            _, late = await asyncio.wait(waits, timeout=wait)
            for w in late:
                w.cancel()
        for request, done in under_way:  # one told the stop that did not end in time: closed now (one that did
            if not done.is_set() and request.transport is not None:  # is answered and closed by the runner's stop)
                request.transport.close()

    async def settle(self, sid: str, request: web.Request) -> bool:
        """Wait for the session's answers whose apps went away to be recorded (or given up), up to
        SETTLE_WAIT; answers to apps still there are theirs, and not waited for. Whether it waited."""
        left_ones = [
            done.wait()
            for other, done in self._by_session.get(sid, {}).values()
            if other is not request and not done.is_set() and app_gone(other)
        ]
        if left_ones:
            await pause_for_tests("answering.settle")  # (the tests hold a question here, waiting for those)
            await asyncio.wait([asyncio.ensure_future(w) for w in left_ones], timeout=SETTLE_WAIT)
        return bool(left_ones)


class AppWatch:
    """`async with AppWatch(request) as w:` around a wait for the provider (its whole answer, a stream's
    first event or next one): if the app goes away meanwhile (looked at every GONE_POLL s), the wait is
    cancelled, which drops the provider's request and so stops the generation, and `w.gone` is set. The
    wait stays in the handler's own task: nothing is added between the provider's first event and the next
    read. `again=True`: one watch for many waits (a stream's chunks), looking on between them (`gone` is set
    then too; the caller looks at it before each wait) until `close()`."""

    def __init__(self, request: web.Request, *, again: bool = False, told: Answering | None = None):
        """`told`: the daemon's questions under way, which then tell this watch the daemon's stop (`stop`,
        `Answering.tell_at_stop`) instead of closing the app's connection, until `close()`: the caller answers
        the app that the daemon stops."""
        self.request = request
        self._told = told
        self.gone = False
        self.stopped = False  # the daemon's stop ended the wait (`stop`): the app is still there, to be told
        self._again = again
        self._handle: asyncio.TimerHandle | None = None
        self._inside = False
        self._early = False  # stopped as it began (`__aenter__`): its cancellation may not have reached the wait

    async def __aenter__(self) -> AppWatch:
        self._task = asyncio.current_task()
        self._inside = True
        if self._told is not None:
            self._told.tell_at_stop(self.request, self.stop)
            if self._told.stopping and not self.stopped:  # (begun after the stop's call: between two watches)
                self._early = True
                self.stop()
        if self._handle is None and not (self.gone or self.stopped):
            self._loop = asyncio.get_running_loop()
            self._handle = self._loop.call_later(GONE_POLL, self._look)
        return self

    def _look(self) -> None:
        if self.stopped:  # (the stop's cancellation is the one: the caller ends the stream)
            self._handle = None
        elif app_gone(self.request):
            self.gone = True
            self._handle = None
            if self._inside:
                assert self._task is not None
                self._task.cancel()
        else:
            self._handle = self._loop.call_later(GONE_POLL, self._look)

    async def __aexit__(self, typ, exc, tb) -> bool:
        self._inside = False
        if not self._again:
            self.close()
        if self._early:
            self._early = False
            if typ is None:  # the wait ended before the stop's cancellation reached it: taken here
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:
                    assert self._task is not None
                    self._task.uncancel()
                if not self._again:
                    # what it waited for is in hand (a whole answer, a stream's first chunk): kept, not dropped
                    # unread; a whole answer recorded and given (let end, as `finishing`), a stream's first chunk
                    # passed on and recorded, its next watch stopped at once
                    self.stopped = False
        if (self.gone or self.stopped) and typ is asyncio.CancelledError:
            assert self._task is not None
            self._task.uncancel()
            return True  # the app left (the caller answers nobody: `left`), or the daemon stops (it says so)
        return False

    def stop(self) -> None:
        """The daemon stops: the wait is cancelled as for an app gone (the generation stopped), `stopped` set."""
        self.stopped = True
        if self._inside and not self.gone:  # (gone: cancelled already)
            assert self._task is not None
            self._task.cancel()

    def close(self) -> None:
        if self._told is not None:
            self._told.finishing(self.request)
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


async def gone_before(request: web.Request) -> bool:
    """Whether the app closed its connection before its request was taken (`sessiond ask` stopped by Ctrl-C
    just after it sent its question, the daemon busy). Two turns of the loop first, in which it reads the end
    of the connection an app sent before: an app that then asked what its key recorded (GET ?key=, on
    another connection) was told nothing, and nothing is."""
    for _ in range(2):
        await asyncio.sleep(0)
    return app_gone(request)
