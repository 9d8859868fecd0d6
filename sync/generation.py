"""Which generation of a shared session a pull read, and whether it still is when the pull writes.

A rekey freezes the dropped writers' logs as this device holds them, then rotates the keys, names the new members
slot and drops the old peers, all under the session's rekey lock. A pull reads the slot and the logs without it,
then applies what it read, writes the slot back or restores it only under that lock, and only if the session is
still on the generation whose slot it read (`Generations.same`): a pull's write in between would carry a dropped
writer's log past its freeze, or list it in the new slot. A poll's pull (`polling`) does not wait for a lock in
use: the session is left to the next poll (`RekeyBusy`), so that the poll's round ends and the other sessions are
pulled again meanwhile; other pulls (`sessiond sync --wait`, an import's) wait for it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Iterator

from .context import SyncContext

# set in a poll's pulls (Follower.pull_all with polling): a pull that would wait for a session's rekey lock, held (a
# rekey here, its store calls and all), leaves the session to the next poll instead (RekeyBusy)
_POLLING: contextvars.ContextVar[bool] = contextvars.ContextVar("sessiond_follower_polling", default=False)


class RekeyBusy(Exception):
    """A poll's pull of a session whose rekey lock is in use (held, or waited for): left to the next poll."""


@contextlib.contextmanager
def polling(on: bool) -> Iterator[None]:
    """The pulls made within are a poll's (`on`): they leave a session whose rekey lock is in use to the next."""
    token = _POLLING.set(on)
    try:
        yield
    finally:
        _POLLING.reset(token)


class Generations:
    """The rekey lock as pulls take it, and the generation check under it."""

    def __init__(self, ctx: SyncContext):
        self.ctx = ctx

    @contextlib.asynccontextmanager
    async def lock(self, sid: str) -> AsyncIterator[None]:
        """`sid`'s rekey lock, held; in a poll's pull only if no one holds it or waits for it: else RekeyBusy.
        The look and the take are one step: an asyncio lock free with no waiter is taken without a wait."""
        if _POLLING.get() and sid in self.ctx.rekey_locks:  # (a lock exists only while held or waited for)
            raise RekeyBusy(sid)
        async with self.ctx.rekey_lock(sid):
            yield

    @contextlib.asynccontextmanager
    async def same(self, sid: str, announce_pk: bytes) -> AsyncIterator[bool]:
        """`sid`'s rekey lock held (a rekey here, its resume and the take of another device's hold it throughout):
        whether the session is still on the generation whose members slot `announce_pk` names, no rekey
        recorded. What a pull read of the slot and the logs is applied or written back only then."""
        async with self.lock(sid):
            yield await self.on(sid, announce_pk)

    async def on(self, sid: str, announce_pk: bytes) -> bool:
        """Whether `sid` is on the generation whose members slot `announce_pk` names, no rekey recorded; read
        without the lock (`same` holds it): a pull that found nothing to apply asks it at its end."""
        now = await self.ctx.db.remote(sid)
        return self.ctx.keys.rekey_pending(sid) is None and now is not None and bytes(now["announce_pk"]) == announce_pk
