"""The folder store's change journal: which heads were set, so a follower's poll costs O(changed heads).

Without it a follower finds changed heads by listing the heads folder, O(every head) each time the folder
changed (~10 ms of CPU per 2,500 heads, 4x a second under load). Each head write appends a fixed-size
record (the head's key and revision) to `heads/.journal` once the head is durable; a follower reads only
the bytes after where it stopped, and stats the heads they name. The journal is a hint, never trusted:
the heads it names are read and verified as before, and a journal that is missing, cut, garbled,
replaced or of another format (and, now and then, every RELIST_EVERY seconds in any case) makes the
follower list the whole folder once, so a head that arrived by another route (a folder synced by
Syncthing or rsync without the journal's lines, a sessiond that writes no journal) is still found.
Layout in docs/FORMATS.md ("The folder store's layout").
"""

from __future__ import annotations

import os
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable

from .changewindow import ChangeWindow

JOURNAL = ".journal"  # in the heads folder (a dot name: the listing skips it)
MAGIC = b"SDHEADS1"  # the format: SDHEADS and a version digit
HEADER_SIZE = 24  # MAGIC | 16 random bytes naming this journal (a new one when it is started again)
RECORD_SIZE = 48  # b"H\x01" | pk (33) | u64le revision | u32le crc32 of the 43 bytes before | b"\n"
RECORD_TAG = b"H\x01"
MAX_JOURNAL = 4 << 20  # bytes: a journal this long is started again (~87,000 records)
_RECORD = struct.Struct("<2s33sQ")
OK, NONE, RELIST = "ok", "none", "relist"  # what a poll's read of the journal says (HeadWatch)


def record(pk: bytes, revision: int) -> bytes:
    """One journal record (RECORD_SIZE bytes)."""
    body = _RECORD.pack(RECORD_TAG, pk, revision)
    return body + struct.pack("<I", zlib.crc32(body)) + b"\n"


def parse(rec: bytes) -> tuple[bytes, int] | None:
    """(pk, revision) of a record; None for a torn or foreign one."""
    if len(rec) != RECORD_SIZE or rec[:2] != RECORD_TAG or rec[47:] != b"\n":
        return None
    body = rec[:43]
    if struct.unpack_from("<I", rec, 43)[0] != zlib.crc32(body):
        return None
    _, pk, revision = _RECORD.unpack(body)
    return pk, revision


def append(heads: str, entries: Iterable[tuple[bytes, int]]) -> None:
    """Append a record per (pk, revision) to the journal of the heads folder `heads`, in one write()
    with O_APPEND (so the records of several writers never interleave); the caller holds the heads
    folder's lock and has made the heads durable. No fsync: a record lost in a crash is found by the
    followers' next full listing. A journal that is too long, missing, not whole records (a torn
    write, another program's bytes) or unreadable is started again; one of a newer format is left
    alone (its writer's followers list the folder). Raises OSError."""
    data = b"".join(record(pk, rev) for pk, rev in entries)
    if not data:
        return
    path = os.path.join(heads, JOURNAL)
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
    except FileNotFoundError:
        fd = -1
    try:
        if fd >= 0:
            size = os.fstat(fd).st_size
            head = os.pread(fd, HEADER_SIZE, 0) if size >= HEADER_SIZE else b""
            ours = head[: len(MAGIC)] == MAGIC
            if head[:7] == MAGIC[:7] and not ours:
                return  # a newer sessiond's journal
            if ours and size < MAX_JOURNAL and (size - HEADER_SIZE) % RECORD_SIZE == 0:
                os.write(fd, data)
                return
        _start(heads, path, data)
    finally:
        if fd >= 0:
            os.close(fd)


def _start(heads: str, path: str, data: bytes) -> None:
    """A new journal holding `data` replaces the old one (a rename: readers see a new journal id)."""
    tmp = os.path.join(heads, f".tmp-journal-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, MAGIC + secrets.token_bytes(HEADER_SIZE - len(MAGIC)) + data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class HeadWatch:
    """A follower's view of a heads folder: what each head's file was (inode, mtime, size; a head is
    replaced by a rename), kept up to date by the journal's new records, or by a full listing when the
    journal cannot say (see the module's note). `poll()` runs in a thread; `changes_since` answers
    Store.head_changes."""

    def __init__(self, heads: str, listing: Callable[[], dict[bytes, object]], relist_every: Callable[[], float]):
        self.heads = heads
        self._listing, self._relist_every = listing, relist_every
        self._lock = threading.Lock()
        self.versions: dict[bytes, object] | None = None  # None until the first listing
        self._journal_id: bytes | None = None
        self._offset = 0
        self._partial = -1  # the journal's size when its last record was seen partial
        self._dir: tuple | None = None  # the heads folder's (inode, mtime, size) at the last poll
        self._dir_listed: tuple | None = None  # ... and at the last listing
        self._listed_at = 0.0
        self._settled = False  # the last listing began with the folder unchanged for a while
        self.listings = 0  # full listings taken (tests, the bench's profile)
        self.records = 0  # journal records read
        self.bad_records = 0  # torn or foreign records skipped
        self._seq = 0
        self.window = ChangeWindow()  # what the latest polls found changed, for head_changes tokens

    def poll(self) -> set[bytes]:
        """The heads whose files changed since the last poll (every head, the first time). Raises
        FileNotFoundError if the heads folder is gone, OSError if it cannot be read."""
        with self._lock:
            changed = self._poll()
            self._seq += 1
            self.window.add(self._seq, changed)
            return changed

    def changes_since(self, since: object | None) -> tuple[object, set[bytes] | None]:
        """After a poll: (the token for the next call, the heads changed since `since`, None if this
        cannot be told: a first call, a token too old)."""
        with self._lock:
            if not isinstance(since, int) or since > self._seq:
                return self._seq, None
            return self._seq, self.window.since(since)

    def _poll(self) -> set[bytes]:
        st = os.stat(self.heads)
        folder = (st.st_ino, st.st_mtime_ns, st.st_size)
        moved, state = self._read_journal()
        now = time.monotonic()
        versions = self.versions
        if (
            versions is None
            or now - self._listed_at >= self._relist_every()  # the safety net
            or state == RELIST  # a new or cut journal, a record we cannot read
            # no journal (a folder only an older sessiond writes): the listing again when the folder changed
            or (state == NONE and (folder != self._dir_listed or not self._settled))
            # the folder changed, and the journal named nothing: a head written without a record (a
            # sync program, an older sessiond), or a record not appended yet (then listed early, harmless)
            or (state == OK and folder != self._dir and not moved)
        ):
            self._dir = self._dir_listed = folder
            return self._list(st, now)
        self._dir = folder
        changed: set[bytes] = set()
        assert versions is not None
        for pk in moved:
            try:
                hs = os.stat(os.path.join(self.heads, pk.hex()))
            except (FileNotFoundError, ValueError):
                # named but absent: a foreign record, or a head not synced here yet; or deleted since
                if versions.pop(pk, None) is not None:
                    changed.add(pk)
                continue
            v = (hs.st_ino, hs.st_mtime_ns, hs.st_size)
            if versions.get(pk) != v:
                versions[pk] = v
                changed.add(pk)
        return changed

    def _list(self, st: os.stat_result, now: float) -> set[bytes]:
        listed = self._listing()
        self.listings += 1
        self._listed_at = now
        # a change in the same clock tick as the one before it would not show in the folder's mtime
        self._settled = time.time_ns() - st.st_mtime_ns >= 2_000_000_000
        before = self.versions or {}
        self.versions = dict(listed)
        # a head deleted is a change too (its slot lost: a follower that wrote it writes it again)
        return {pk for pk, v in listed.items() if before.get(pk) != v} | (before.keys() - listed.keys())

    def _read_journal(self) -> tuple[set[bytes], str]:
        """The heads named by the journal's records since the last poll, and whether they are all there
        is to know: OK, RELIST (list the folder), NONE (no journal of this format: the folder's mtime
        says when to list it). The journal's end is taken before any listing, so what is
        appended after it is read at the next poll."""
        try:
            fd = os.open(os.path.join(self.heads, JOURNAL), os.O_RDONLY)
        except FileNotFoundError:
            self._journal_id = None
            return set(), NONE
        try:
            size = os.fstat(fd).st_size
            header = os.pread(fd, HEADER_SIZE, 0)
            if len(header) < HEADER_SIZE or header[: len(MAGIC)] != MAGIC:
                self._journal_id = None
                return set(), NONE
            if header != self._journal_id or size < self._offset:  # new (started again), or cut
                self._journal_id, self._offset = header, max(HEADER_SIZE, size)
                return set(), RELIST
            n = (size - self._offset) // RECORD_SIZE
            data = os.pread(fd, n * RECORD_SIZE, self._offset) if n else b""
        finally:
            os.close(fd)
        n = len(data) // RECORD_SIZE
        self._offset += n * RECORD_SIZE
        torn = False
        if size > self._offset:  # a partial record: being written (read at the next poll), or torn
            torn = size == self._partial  # still there at the next poll: torn (and skipped)
            self._partial = size
            if torn:
                self._offset = size
        else:
            self._partial = -1
        self.records += n
        moved: set[bytes] = set()
        state = RELIST if torn else OK
        for i in range(0, n * RECORD_SIZE, RECORD_SIZE):
            rec = parse(data[i : i + RECORD_SIZE])
            if rec is None:
                self.bad_records += 1
                state = RELIST  # skipped, and the listing finds what it may have named
            else:
                moved.add(rec[0])
        return moved, state
