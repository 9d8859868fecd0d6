"""What each account's change feed follows, kept on disk while the relay runs: `DATA/follows/<account>`
(0600), a head's 33 bytes appended when the account first follows it (feed.py). So a relay that did not
stop cleanly (kill -9, a crash, a power cut), which keeps no feed state (feedstate.py), still knows after
it starts which heads each account follows: its followers' feeds reset (a new epoch), and the reset names
every head each follows with its revision, so a daemon reads only the heads that moved, or that it never
read, not every head it follows.

Nothing here needs to be durable: a record a crash lost (an append is not synced) is a head the reset does
not name, which the daemon reads, as it reads every head it follows after a relay that kept nothing, and
which follows it again. A torn last record is ignored. At start each account's log is written again
(atomically) from what its feed follows then, and one whose account is gone or revoked is deleted; while
the relay runs an account's log is written again from its follows when it holds twice as many records as
the feed keeps follows (feed.MAX_FOLLOWED), so it stays bounded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping

from ..storage.fsutil import atomic_write

log = logging.getLogger("sessiond.relay")

DIR = "follows"
RECORD = 33  # 0xed | an Ed25519 public key


class FollowLog:
    def __init__(self, data_dir: str, max_followed: int):
        self.dir = os.path.join(data_dir, DIR)
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.max_records = 2 * max_followed
        self._records: dict[str, int] = {}  # per account: the records its log holds
        self._failed = False

    def _path(self, account: str) -> str:
        return os.path.join(self.dir, account)

    def load(self, keep: Callable[[str], bool]) -> dict[str, list[bytes]]:
        """Each kept account's follows as its log holds them, the oldest first (the logs of the others are
        deleted)."""
        out: dict[str, list[bytes]] = {}
        for account in sorted(os.listdir(self.dir)):
            path = self._path(account)
            if not keep(account):
                _unlink(path)
                continue
            pks = self.read(account)
            if pks is not None:
                out[account] = pks
        return out

    def read(self, account: str) -> list[bytes] | None:
        """The account's follows as its log holds them, the oldest first; None if it does not read (warned)."""
        path = self._path(account)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("relay: %s does not read (%s): its account's follows start again", path, exc)
            return None
        end = len(raw) - len(raw) % RECORD  # (a torn last record: a crash mid-append)
        return [raw[i : i + RECORD] for i in range(0, end, RECORD) if raw[i] == 0xED]

    def settle(self, follows: Mapping[str, Iterable[bytes]]) -> None:
        """Write each account's log again from what its feed follows now (`follows`, the oldest first), and
        delete the logs of accounts that follow nothing: at start, once the feed is restored."""
        for account in os.listdir(self.dir):
            if account not in follows:
                _unlink(self._path(account))
        for account, pks in follows.items():
            self.rewrite(account, pks)

    def rewrite(self, account: str, pks: Iterable[bytes]) -> None:
        records = list(pks)
        try:
            atomic_write(self._path(account), b"".join(records), 0o600)
        except OSError as exc:
            self._warn(exc)
            return
        self._records[account] = len(records)

    def followed(self, account: str, pk: bytes, follows: Callable[[], Iterable[bytes]]) -> None:
        """`account` now follows `pk`: appended to its log (written again from `follows()` past its bound)."""
        n = self._records.get(account, 0) + 1
        if n > self.max_records:
            self.rewrite(account, follows())
            return
        try:
            fd = os.open(self._path(account), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, pk)
            finally:
                os.close(fd)
        except OSError as exc:
            self._warn(exc)
            return
        self._records[account] = n

    def _warn(self, exc: OSError) -> None:
        """Once a run: a follow not kept is a head its daemon reads after a crash, nothing worse."""
        if not self._failed:
            self._failed = True
            log.warning(
                "relay: an account's follows were not kept on disk (%s): after a crash, its daemon "
                "reads the heads they name again",
                exc,
            )


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
