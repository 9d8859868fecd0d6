"""The change feed on heads, one per account: an account asks for the heads changed after its cursor
and, if none did, waits (long-poll) until one does or the wait ends. So a follower learns of a new head
as soon as it is set, with one open request, however many heads it follows.

An account's feed names only the heads it follows: those it set (POST /s5/registry) or read with its
token (GET /s5/registry, found or not: a member that has not pushed yet is followed before its first
head). So it tells an account nothing of the heads of others (which exist, who writes when and how
often) beyond what it could read of heads whose keys it knows. Each account has its own cursor (its
feed's sequence numbers count its own heads' changes only), and a head's change wakes only the
accounts that follow it.

Sequence numbers and what each account follows live in memory, and are kept across a clean restart
(feedstate.py: written when the relay stops, read and deleted when it starts): the epoch, the cursors and
the follows go on, so a daemon following the feed is told only what changed. A relay that did not stop
cleanly starts with a new random `epoch`, each account following what its follows log kept (follows.py,
appended as follows are made): a follower presenting another epoch gets `reset` and every head it
follows with its revision, and its daemon reads the heads that moved and those not named (which
follows them again), so nothing set while it was away is missed.

An account follows at most MAX_FOLLOWED heads; past them the one that changed (or was followed) longest
ago is dropped, and its changes reach that account's daemon only by its full rounds.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from collections.abc import Callable

from .feedstate import Saved
from .follows import FollowLog

MAX_FOLLOWED = 250_000  # heads one account follows (a device following more: its full rounds see the rest)


class _View:
    """One account's feed: the heads it follows, each with the sequence of its last change (or the
    account's cursor when it was followed), in the order of those sequences (a change, or a follow, puts
    its head at the end), so the heads changed after a cursor are a walk back from the end: an answer
    costs what changed for this account, not every head it follows; the head dropped past MAX_FOLLOWED
    is the first."""

    __slots__ = ("cursor", "heads", "wake")

    def __init__(self) -> None:
        self.cursor = 0
        self.heads: OrderedDict[bytes, int] = OrderedDict()
        self.wake = asyncio.Event()  # set (and replaced) at each change of a head this account follows


class Feed:
    def __init__(self, max_followed: int = MAX_FOLLOWED) -> None:
        self.epoch = secrets.token_hex(8)
        self.max_followed = max_followed
        self._revisions: dict[bytes, int] = {}  # every head the relay holds: its revision
        self._followers: dict[bytes, tuple[_View, ...]] = {}  # pk -> the feeds of the accounts following it
        self._views: dict[str, _View] = {}
        self._closing = False
        self.log: FollowLog | None = None  # where each new follow is kept as it is made (follows.py)

    def load(self, pk: bytes, revision: int) -> None:
        """A head found on disk at start."""
        self._revisions[pk] = revision

    def follow(self, account: str, pk: bytes) -> None:
        """`account` set or read `pk`: its feed names the head's changes from now on."""
        view = self._views.get(account)
        if view is None:
            view = self._views[account] = _View()
        if pk in view.heads:
            return
        # at the end, as changed at the account's cursor now: not news to a follower that has read up to it
        view.heads[pk] = view.cursor
        self._followers[pk] = self._followers.get(pk, ()) + (view,)
        while len(view.heads) > self.max_followed:
            gone, _ = view.heads.popitem(last=False)
            left = tuple(v for v in self._followers[gone] if v is not view)
            if left:
                self._followers[gone] = left
            else:
                del self._followers[gone]
        if self.log is not None:
            self.log.followed(account, pk, lambda: list(view.heads))

    def follows(self) -> dict[str, list[bytes]]:
        """The heads each account follows, the one changed or followed longest ago first."""
        return {account: list(view.heads) for account, view in self._views.items() if view.heads}

    def adopt(self, follows: dict[str, list[bytes]]) -> None:
        """Follow what each account followed before the relay stopped without saving the feed's state (as
        its follows log kept it: follows.py), with this start's new epoch: each follower's feed resets, and
        the reset names every head it follows, with its revision (at most max_followed, the newest)."""
        for account, pks in follows.items():
            for pk in pks:
                self.follow(account, pk)

    async def changed(self, pk: bytes, revision: int) -> None:
        self._revisions[pk] = revision
        self._name(pk)

    def _name(self, pk: bytes) -> None:
        """A change of `pk`, in the feed of each account following it."""
        for view in self._followers.get(pk, ()):
            view.cursor += 1
            view.heads[pk] = view.cursor
            view.heads.move_to_end(pk)
            wake, view.wake = view.wake, asyncio.Event()
            wake.set()

    def saved(self) -> Saved:
        """What a restart needs to go on from here (feedstate.py): the epoch, each account's cursor and
        follows, and the revision of each head followed."""
        out = Saved(self.epoch)
        for account, view in self._views.items():
            out.accounts[account] = (view.cursor, list(view.heads.items()))
        out.revisions = {pk: self._revisions.get(pk) for pk in self._followers}
        return out

    def restore(
        self,
        saved: Saved,
        keep: Callable[[str], bool] = lambda account: True,
        logged: Callable[[str], list[bytes]] = lambda account: [],
    ) -> int:
        """Go on from `saved` (after load(), before anyone asks): its epoch, and the follows of the accounts
        `keep` keeps (at most max_followed each, the newest). A followed head whose revision is not the one
        saved changed after the state was written: named now, after every cursor. Returns how many.
        An account whose entry did not read (saved.skipped) follows what its follows log kept (`logged`),
        each head named to it as changed after its saved cursor: its follower, which read at most up to that
        cursor, hears of each and reads those that moved, as after a reset."""
        self.epoch = saved.epoch
        for account, (cursor, follows) in saved.accounts.items():
            if not keep(account):
                continue
            view = self._views[account] = _View()
            view.cursor = cursor
            for pk, seq in follows[-self.max_followed :]:
                view.heads[pk] = seq
                self._followers[pk] = self._followers.get(pk, ()) + (view,)
        for account, cursor in saved.skipped.items():
            if not keep(account):
                continue
            view = self._views[account] = _View()
            view.cursor = cursor
            for pk in logged(account)[-self.max_followed :]:
                view.cursor += 1
                view.heads[pk] = view.cursor
                self._followers[pk] = self._followers.get(pk, ()) + (view,)
        moved = [
            pk for pk, rev in saved.revisions.items() if pk in self._followers and self._revisions.get(pk, rev) != rev
        ]
        for pk in moved:
            self._name(pk)
        return len(moved)

    def since(self, account: str, cursor: int, epoch: str | None) -> tuple[bool, int, list[tuple[bytes, int]]]:
        """(reset, the account's cursor now, the heads it follows changed after `cursor`, as (pk, revision)):
        all it follows if `epoch` is not the feed's (or `cursor` is ahead of the account's)."""
        view = self._views.get(account)
        now = view.cursor if view is not None else 0
        reset = epoch != self.epoch or cursor > now
        if view is None:
            return reset, now, []
        revisions = self._revisions
        if reset:
            return reset, now, [(pk, revisions[pk]) for pk in view.heads if pk in revisions]
        items = []
        for pk in reversed(view.heads):
            seq = view.heads[pk]
            if seq <= cursor:
                break
            if pk in revisions:  # (a head followed before anyone set it, after the cursor: nothing to name)
                items.append((pk, revisions[pk]))
        items.reverse()
        return reset, now, items

    async def wait(
        self, account: str, cursor: int, epoch: str | None, timeout: float
    ) -> tuple[bool, int, list[tuple[bytes, int]]]:
        """The changes after `cursor` of the heads `account` follows (as since()), waiting up to `timeout`
        seconds for one if there are none yet."""
        answer = self.since(account, cursor, epoch)
        if answer[0] or answer[2] or timeout <= 0 or self._closing:
            return answer
        view = self._views.get(account)
        if view is None:
            view = self._views[account] = _View()
        try:
            await asyncio.wait_for(view.wake.wait(), timeout)
        except TimeoutError:
            pass
        return self.since(account, cursor, epoch)

    async def close(self) -> None:
        """Answer every waiting follower now (the relay is stopping)."""
        self._closing = True
        for view in self._views.values():
            view.wake.set()
