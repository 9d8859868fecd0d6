"""The follower side of a relay's change feed (`GET /s5/registry/changes`, relay/feed.py): one
long-poll kept open in the background by an `S5Store` (stores/s5.py), so that followers know which
heads moved without reading each one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .changewindow import ChangeWindow
from .errors import RateLimited, ServerError, StoreTimeout, StoreUnreachable
from .s5account import unb64url

# seconds the feed may fail as a restarting relay fails (an upgrade, a quick reboot: `restarting`) and
# still be taken as having named nothing new yet: a relay that keeps its feed across a restart
# (relay/feedstate.py) names, at its first answer, whatever changed meanwhile, and one that did not resets
# (its followers read the heads it does not name at the revision they hold). Past it, followers fall back
# to reading each head (full rounds), as a store without a feed is read. A relay that answers and
# refuses the feed gets no grace: its followers read heads at once.
FEED_GRACE = 60.0
# what a proxy in front of a relay that is restarting answers (not 504: a proxy whose read timeout is shorter
# than the feed's long-poll answers every poll so, and its followers would wait out the grace at each start)
GATEWAY_DOWN = (502, 503)


def restarting(exc: BaseException | None) -> bool:
    """Whether a failed poll looks like a relay restarting (not reached, a proxy saying it is down, no
    answer in time) rather than one that answered and refused or garbled the feed (`exc` None: it said it
    has no feed)."""
    if isinstance(exc, (StoreUnreachable, StoreTimeout, RateLimited)):
        return True
    return isinstance(exc, ServerError) and exc.status in GATEWAY_DOWN


class ChangeFeed:
    """The follower side of the relay's `GET /s5/registry/changes` long-poll (relay/feed.py)."""

    def __init__(self, call: Callable[..., Awaitable[Any]], authority: str, timeout: float):
        """`call`: the store's authenticated request (S5Store._call); `timeout`: its HTTP client's."""
        self._call = call
        self.authority = authority
        self.timeout = timeout
        self.epoch: str | None = None
        self.cursor = 0
        self.heads: dict[bytes, int] = {}
        self._failing_since: float | None = None  # monotonic time of the first failed poll in a row
        # what each answer named, under the cursor after it, for changes_since; a cursor older than what it
        # keeps (the feed reset, or old batches were dropped) means "anything may have changed"
        self.window = ChangeWindow()
        self._task: asyncio.Task | None = None

    async def poll(self, wait: float) -> bool:
        """One request; False if the server has no feed (404/405). Raises StoreError on a failure."""
        params = {"since": str(self.cursor), "wait": f"{wait:g}"}
        if self.epoch:
            params["epoch"] = self.epoch
        reply = await self._call("GET", "/s5/registry/changes", params=params, passthrough=(404, 405), retry=False)
        if reply.status in (404, 405):
            return False
        doc = reply.json()
        try:
            changes = [(unb64url(c["pk"]), int(c["revision"])) for c in doc["changes"]]
            epoch, cursor, reset = str(doc["epoch"]), int(doc["cursor"]), bool(doc["reset"])
        except (KeyError, TypeError, ValueError):
            raise ServerError(f"the relay {self.authority} answered a change feed we cannot read") from None
        heads = {} if reset else dict(self.heads)
        heads.update(changes)
        if reset or epoch != self.epoch:
            self.window.reset(cursor)
        else:
            self.window.add(cursor, [pk for pk, _ in changes])
        self.heads, self.epoch, self.cursor = heads, epoch, cursor
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"s5-feed-{self.authority}")

    async def _run(self) -> None:
        # the server waits up to 25 s; the request must end well within the client's own timeout
        wait = max(0.5, min(25.0, self.timeout * 0.8 - 1))
        backoff = 0.25
        while True:
            failure: BaseException | None = None
            try:
                ok = await self.poll(wait)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # down, refused, unreadable: see restarting()
                ok, failure = False, exc
            if ok:
                self._failing_since = None
                backoff = 0.25
            else:
                now = time.monotonic()
                # a refusal ends the grace at once, even one that follows failures that looked like a restart
                since = now if restarting(failure) else now - FEED_GRACE
                if self._failing_since is None or since < self._failing_since:
                    self._failing_since = since
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    @property
    def healthy(self) -> bool:
        """Answering, or failing for less than FEED_GRACE: what it named is still all that changed as far as
        anyone can tell (its cursor is kept, and its next answer names what changed meanwhile)."""
        return self._failing_since is None or time.monotonic() - self._failing_since < FEED_GRACE

    def versions(self) -> dict[bytes, object] | None:
        return dict(self.heads) if self.healthy else None

    def revisions(self) -> dict[bytes, int] | None:
        """Each head's revision as the feed last named it: its last reset's answer (every head the account
        follows), updated by each answer since. None past the grace."""
        return dict(self.heads) if self.healthy else None

    def changes_since(self, since: object | None) -> tuple[object, set[bytes] | None] | None:
        """(a token for the next call, the heads changed since `since`): None for the heads when the
        feed cannot tell (a first call, a reset: the relay restarted without its feed's state, `since` too
        old); None once it has failed for FEED_GRACE (before that: nothing named yet, the token kept)."""
        if not self.healthy:
            return None
        token = (self.epoch, self.cursor)
        if not isinstance(since, tuple) or len(since) != 2 or since[0] != self.epoch or not isinstance(since[1], int):
            return token, None
        return token, self.window.since(since[1])

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
