"""A push's step recorded (sync/pusher.py, through `Database.save_pushed`): its sync state (syncstate.py) and
gc's notes of the objects it concerns (lifecycle.py's `Released`), in one transaction, so that no crash leaves
the pushed mark without the notes."""

from __future__ import annotations

from .connections import Connections
from .lifecycle import Released
from .syncstate import SyncState


class PushedMark:
    """Writes a push's step: composed by `Database` over its sync state and its record of released objects."""

    def __init__(self, c: Connections, syncstate: SyncState, released: Released):
        self.c = c
        self.syncstate = syncstate
        self.released = released

    async def save(
        self,
        sid: str,
        released: tuple[str, list[bytes]] | None,
        *,
        named: tuple[str, list[bytes]] | None = None,
        **fields,
    ) -> None:
        """A push's step in one transaction: its sync_state `fields`; the objects its log no longer
        references (`released`: the store's URL and their hashes), noted for gc; the objects a revision
        being recorded names (`named`), noted before their upload (sync/pusher.py), no longer candidates.
        Two transactions left, after a crash between them, the pushed mark without the note: gc never freed
        what it named (or the revision recorded with its objects still candidates: gc freed them)."""
        async with self.c.transaction() as tx:
            await self.syncstate.save_sync_state_in(tx, sid, **fields)
            if named is not None:
                await self.released.forget_in(tx, named[0], named[1])
            if released is not None:
                await self.released.add_in(tx, released[0], sid, released[1])
