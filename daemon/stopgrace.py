"""The requests under way on one of the daemon's aiohttp apps, given the grace its stop chooses.

aiohttp waits for the requests under way at a runner's cleanup for a grace fixed when the runner is made (its
`shutdown_timeout`), then cancels them and waits as long again. The daemon's stop takes each part's wait from
one deadline (server.py `stop`), so the requests' grace is known only then. Each handler notes its task here
(`UnderWay.track`); the app's last shutdown hook (`give_grace`, after the append streams are closed and the
stalled answers hung up on) waits for them up to the grace the stop set, cancels those left and waits as long
again; aiohttp's own wait, `SETTLED`, then finds them ended (it is only for a handler that outlives its
cancellation)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

from aiohttp import web

STOP_GRACE = 3.0  # the grace of a stop that sets none: the requests' own, then as long again once cancelled
SETTLED = 0.5  # aiohttp's shutdown_timeout: its wait after give_grace, for a handler that outlived its cancel


class UnderWay:
    """The tasks of an app's requests under way, and the grace they get at the stop."""

    __slots__ = ("grace", "tasks")

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task | None] = set()  # (None: a handler run outside a task)
        self.grace = STOP_GRACE

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Around a handler: its task noted while it runs (a set's add and discard: the appends' path)."""
        task = asyncio.current_task()
        if task is None:  # (not in a task: nothing to wait for)
            yield
            return
        self.tasks.add(task)
        try:
            yield
        finally:
            self.tasks.discard(task)

    async def settle(self) -> None:
        """The requests under way given `grace` seconds to end, then cancelled and given as long again."""
        await self._wait()
        left = self._live()
        for t in left:
            t.cancel()
        if left:
            await self._wait()

    def _live(self) -> set[asyncio.Task]:
        return {t for t in self.tasks if t is not None and not t.done()}

    async def _wait(self) -> None:
        end = time.monotonic() + self.grace
        while (live := self._live()) and (wait := end - time.monotonic()) > 0:
            await asyncio.wait(live, timeout=wait)  # (a request a kept-alive connection brought meanwhile too)


UNDER_WAY_KEY = web.AppKey("under_way", UnderWay)


async def give_grace(app: web.Application) -> None:
    await app[UNDER_WAY_KEY].settle()


def install(app: web.Application) -> UnderWay:
    """The app's requests under way noted, and given their grace as its last shutdown hook: add it after the
    app's other shutdown hooks (they end what would never end by itself: append streams, stalled writes)."""
    under = app[UNDER_WAY_KEY] = UnderWay()
    app.on_shutdown.append(give_grace)
    return under


async def stop_runner(runner: web.AppRunner, grace: float) -> None:
    """Stop `runner`'s listener, its requests under way given `grace` seconds before they are cancelled (and as
    long again to end once cancelled): the daemon's stop sets it from its one deadline, not from the start."""
    runner.app[UNDER_WAY_KEY].grace = max(grace, 0.0)
    await runner.cleanup()
