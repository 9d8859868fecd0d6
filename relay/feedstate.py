"""The change feed's state kept across a clean restart of the relay: `DATA/feed` (0600), written once, when
the relay stops (SIGTERM, SIGINT: an upgrade, a reboot), read and deleted when it starts, before it
serves. It holds the feed's epoch, each account's cursor and the heads it follows (each with the sequence
of its last change), and the revision of each followed head as the feed last knew it. So a relay
restarted cleanly goes on with the same epoch and cursors: a daemon that followed the feed before the
restart goes on after it, told only what changed, without reading every head again.

Why only at a clean stop, and deleted at start: the sequence numbers a relay hands out after the file is
written are not in it, and a relay that went on from an older file would hand them out again for other
changes, so a daemon that had read up to one of them would miss the changes numbered below it. A relay
that did not stop cleanly (kill -9, a power cut, a crash) finds no file: it starts with a new epoch, each
account following what its follows log kept (follows.py), and each daemon resets (reads the heads the
reset names at a revision it does not hold, and those it does not name, which follows them again).
Nothing is missed either way. A head that changed after the file was written (a write still finishing in
a thread as the relay stopped, or an older version of the relay run on the folder meanwhile) has a
revision other than the one the file holds: it is named as a change, after every cursor, at start.

Format (integers big-endian):
    magic       b"sessiond-relay-feed 1\\n"
    epoch       u8 length, ASCII
    heads       u32 count; each: pk (33 bytes), u8 1 if the relay held the head (0: followed before anyone
                set it), u64 its revision (0 when not held)
    accounts    u32 count; each: u8 length, the account id (ASCII), u64 cursor, u32 count, and that many
                (u32 index into heads, u64 sequence), in the order of their sequences (the oldest first)
    checksum    BLAKE2b-256 of everything before it
A file that does not read (damaged, another format, its framing broken) is deleted with a warning, as if
absent. One that reads but holds a bad entry loses only that entry's accounts (each warned of): a head key
that is not Ed25519 costs the accounts that follow it, and an account whose id is not ASCII or whose follows
are out of order is skipped. A skipped account's cursor, when it reads, is kept in `Saved.skipped`: the feed
then takes its follows from its follows log and names each to it as changed after that cursor (feed.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from dataclasses import dataclass, field

from ..storage.fsutil import atomic_write, fsync_dir

log = logging.getLogger("sessiond.relay")

FILE = "feed"
MAGIC = b"sessiond-relay-feed 1\n"
_HEAD = struct.Struct(">33sBQ")
_FOLLOW = struct.Struct(">IQ")
_ACCOUNT = struct.Struct(">QI")
_COUNT = struct.Struct(">I")
_SUM = 32


class Damaged(ValueError):
    pass


@dataclass
class Saved:
    epoch: str
    # account -> (its cursor, the heads it follows as (pk, sequence), the oldest sequence first)
    accounts: dict[str, tuple[int, list[tuple[bytes, int]]]] = field(default_factory=dict)
    revisions: dict[bytes, int | None] = field(default_factory=dict)  # each followed head's revision; None: unset
    skipped: dict[str, int] = field(default_factory=dict)  # account -> its cursor: an entry that did not read


def encode(saved: Saved) -> bytes:
    index: dict[bytes, int] = {}
    heads: list[bytes] = []
    for pk, rev in saved.revisions.items():
        index[pk] = len(heads)
        heads.append(_HEAD.pack(pk, rev is not None, rev or 0))
    parts = [MAGIC, _text(saved.epoch), _COUNT.pack(len(heads)), *heads, _COUNT.pack(len(saved.accounts))]
    for account, (cursor, follows) in saved.accounts.items():
        parts += [_text(account), _ACCOUNT.pack(cursor, len(follows))]
        parts += [_FOLLOW.pack(index[pk], seq) for pk, seq in follows]
    body = b"".join(parts)
    return body + hashlib.blake2b(body, digest_size=_SUM).digest()


def _text(s: str) -> bytes:
    raw = s.encode("ascii")
    if not 0 < len(raw) < 256:
        raise ValueError(f"{s!r} does not fit the feed file")
    return bytes([len(raw)]) + raw


class _Reader:
    def __init__(self, raw: bytes):
        self.raw, self.at = raw, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.raw):
            raise Damaged("cut short")
        out = self.raw[self.at : self.at + n]
        self.at += n
        return out

    def text(self) -> str:
        try:
            return self.take(self.take(1)[0]).decode("ascii")
        except UnicodeDecodeError:
            raise Damaged("not ASCII") from None

    def raw_text(self) -> bytes:
        return self.take(self.take(1)[0])

    def unpack(self, st: struct.Struct, count: int = 1) -> list[tuple]:
        return list(st.iter_unpack(self.take(st.size * count))) if count else []


def decode(raw: bytes) -> Saved:
    body, checksum = raw[:-_SUM], raw[-_SUM:]
    if not raw.startswith(MAGIC) or len(raw) < len(MAGIC) + _SUM:
        raise Damaged("not a feed file of this version")
    if hashlib.blake2b(body, digest_size=_SUM).digest() != checksum:
        raise Damaged("checksum does not match")
    r = _Reader(body)
    r.take(len(MAGIC))
    saved = Saved(r.text())
    (n,) = r.unpack(_COUNT)[0]
    pks: list[bytes | None] = []  # (None: a bad key, its entry skipped)
    for number, (pk, held, rev) in enumerate(r.unpack(_HEAD, n)):
        if pk[0] != 0xED:
            log.warning("relay: the feed file's head #%d has a key that is not Ed25519: skipped", number)
            pks.append(None)
            continue
        pks.append(pk)
        saved.revisions[pk] = rev if held else None
    (n,) = r.unpack(_COUNT)[0]
    for number in range(n):
        name = r.raw_text()
        cursor, count = r.unpack(_ACCOUNT)[0]
        follows, bad = _follows(r.unpack(_FOLLOW, count), pks, cursor)
        if not name.isascii():
            log.warning("relay: the feed file's account #%d has an id that is not ASCII: skipped", number)
        elif bad:
            saved.skipped[name.decode()] = cursor
            log.warning(
                "relay: the feed file's entry of account %s %s: skipped (its follows taken from its log)",
                name.decode(),
                bad,
            )
        else:
            saved.accounts[name.decode()] = (cursor, follows)
    if r.at != len(body):
        raise Damaged("bytes after the end")
    return saved


def _follows(raw: list[tuple], pks: list[bytes | None], cursor: int) -> tuple[list[tuple[bytes, int]], str]:
    """An account's follows as (pk, sequence), and what is wrong with them ("" if nothing)."""
    follows, last = [], 0
    for i, seq in raw:
        if i >= len(pks) or not last <= seq <= cursor:
            return [], "has a follow out of order"
        pk = pks[i]
        if pk is None:
            return [], f"follows head #{i}, skipped"
        follows.append((pk, seq))
        last = seq
    return follows, ""


def save(data_dir: str, saved: Saved) -> None:
    """Write the feed's state (atomically, 0600): called when the relay stops cleanly."""
    atomic_write(os.path.join(data_dir, FILE), encode(saved), 0o600)


def take(data_dir: str) -> Saved | None:
    """The state a clean stop left, read and deleted (durably: a relay that then stops uncleanly must
    not go on from it); None if there is none, or it does not read."""
    path = os.path.join(data_dir, FILE)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    os.unlink(path)
    fsync_dir(data_dir)
    try:
        return decode(raw)
    except Damaged as exc:
        log.warning("relay: %s does not read (%s): every follower's feed starts again", path, exc)
        return None
