"""The push of this device's log that a switch to a new key left to the end of a chain of rekeys (sync/rekeyswitch.py
KeySwitch._switch_key: a device catching up a generation at a time pushes once, under the last key), paid if the chain
stops short of its end (`settle`, from sync/follower.py).

Noted in memory as the switch leaves it, and derived from the database the first time a process asks of a session:
this device's last published head recorded as sealed on another members slot than the one the session is on
(sync_state.head_announce, written by Pusher.push with the head). Kept in memory only, it was lost to a daemon killed
after such a switch: if the chain was then blocked for good (a notice this device can never take), its head stayed
under a key from before the switch, which a device holding only the keys from the switch on cannot open, while
`status` said all pushed; nothing else pushed it again while it wrote nothing new."""

from __future__ import annotations

from .context import SyncContext
from .pusher import OLDER_KEY, Pusher


class OwedPush:
    def __init__(self, ctx: SyncContext, pusher: Pusher):
        self.ctx = ctx
        self.pusher = pusher
        self._owed: set[str] = set()
        self._derived: set[str] = set()  # the sessions derived from the database in this process

    def note(self, sid: str) -> None:
        """A switch left the push of `sid` to the chain's end."""
        self._owed.add(sid)

    def paid(self, sid: str) -> None:
        """This device's log of `sid` pushed under the key the session is on."""
        self._owed.discard(sid)

    async def owes(self, sid: str, remote: dict | None = None) -> bool:
        """Whether the push of this device's log of `sid` is owed (noted, or derived: `_head_behind`). `remote`: the
        session's row as the caller read it in this generation (a pull's, read at its start), not read again."""
        if sid not in self._derived:
            self._derived.add(sid)
            if await self._head_behind(sid, remote):
                self._owed.add(sid)
        return sid in self._owed

    async def _head_behind(self, sid: str, remote: dict | None) -> bool:
        """sync_state.head_announce (the slot the session was on as its last head was sealed) names another slot than
        the session's, or is OLDER_KEY. Unknown (NULL: pushed by a sessiond before it, or a head this database did not
        publish): no."""
        db = self.ctx.db
        if self.ctx.keys.write_secret(sid) is None:  # (a reader pushes nothing)
            return False
        state = await db.sync_state(sid)
        if remote is None:
            remote = await db.remote(sid)
        sealed = state.get("head_announce")
        if remote is None or not state["head_rev"] or sealed is None:
            return False
        return bytes(sealed) == OLDER_KEY or bytes(sealed) != bytes(remote["announce_pk"])

    async def settle(self, sid: str) -> None:
        """The owed push of `sid`, when the chain stopped short of its end: a pull that goes on in this generation
        (no notice taken), or a notice the device could not take (left out of it: its log stays pushed under the
        last key it held, as it was before the push waited). A push that fails raises; it is owed still."""
        if await self.owes(sid):
            await self.pusher.push(sid, force=True)
            self._owed.discard(sid)
