"""One revision of this device's log of a session, as a push makes it (sync/pusher.py): what a push of
one session holds (OnePush), what is recorded before anything of a revision is uploaded (Revision), and
the job that makes a revision's pages, manifest and head off the event loop (RevisionJob -> Made).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from nacl.signing import SigningKey

from ..storage.model import LogRun
from ..stores import Store
from ..stores.cid import CIDV1_RAW_BLAKE3
from ..stores.registry import RegistryEntry
from . import dagcbor
from .context import SyncContext
from .crypto import EncryptedCID
from .errors import SyncError
from .heads import encode_levels, head_data
from .manifest import encode_manifest
from .pages import Entry
from .push import LogWriter

_ENC = dagcbor.encode_ordered
_PENDING_HEAD = dagcbor.head(5, 4)  # the map {m, r, s, t} recorded in sync_state.pending


class OnePush:
    """What one push of one session needs: its keys and a writer that counts what it wrote."""

    def __init__(self, ctx: SyncContext, sid: str, store: Store, key: bytes, key_written: asyncio.Future | None = None):
        self.sid = sid
        self.store = store
        # A new session key's durable write (KeyStore.session_key_early), awaited before the first
        # revision is recorded: nothing names an object sealed with the key before its file is on disk
        self.key_written = key_written
        if key_written is not None:  # a push that fails first leaves the write's failure to the others
            key_written.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.head_key: SigningKey = ctx.keys.head_key(sid)
        self.head_pk = ctx.keys.head_pk(sid)
        self.writer = LogWriter(sid, ctx.db.device_id, key, store, ctx.timeout, workers=ctx.workers)
        # this device's rekey claims, written into every manifest (sync_state.rekey_claims; rekey.py)
        self.claims: list[dict] = []


@dataclass
class Revision:
    """One revision of this device's log, recorded in `sync_state.pending` before anything of it is
    uploaded: the manifest's plaintext, the last seq it covers, its level tree (encoded as recorded), and
    the link to the manifest it follows (`prev`, which the push lets go once it is published), and the
    levels themselves when this process built them (None when read back after a crash)."""

    rev: int
    plain: bytes
    seq: int
    tree: bytes
    prev: bytes | None
    levels: list[list[Entry]] | None = None

    def pending(self) -> bytes:
        """dagcbor.encode({"m": plain, "r": rev, "s": seq, "t": levels}), put together from its parts
        (keys in DAG-CBOR order; the tree encoded already)."""
        return b"".join(
            (_PENDING_HEAD, _ENC("m"), _ENC(self.plain), _ENC("r"), _ENC(self.rev), _ENC("s"), _ENC(self.seq))
            + (_ENC("t"), self.tree)
        )

    @classmethod
    def recorded(cls, pending: bytes) -> Revision:
        """A revision recorded by a push that a crash or a failure cut short (decoded and checked)."""
        p = dagcbor.decode(pending)
        prev = dagcbor.decode(p["m"]).get("prev")
        return cls(p["r"], p["m"], p["s"], dagcbor.encode(p["t"]), bytes(prev) if prev is not None else None)


@dataclass
class Made:
    """A revision made by a RevisionJob: what is recorded (`pending`), the objects of its pages to store first
    (ciphertext, hash), its manifest sealed (`manifest`, `ref`), its head signed (`entry`), and its levels
    frozen for Pusher._levels (None for a revision read back after a crash)."""

    revision: Revision
    pending: bytes
    objects: list[tuple[bytes, bytes]]
    manifest: bytes
    ref: EncryptedCID
    entry: RegistryEntry
    frozen: tuple[tuple[Entry, ...], ...] | None


class RevisionJob:
    """The pure-CPU work of one revision, as one job off the event loop: for a short run, read in the
    bulk-read thread (Database.with_log_run) and its pages encoded and sealed there; the manifest and level
    tree encoded, the manifest sealed, the head signed. The event loop hands it over once and stores what
    it made (bench/results/profile-load.md, "Fifteenth pass")."""

    def __init__(
        self,
        one: OnePush,
        rev: int,
        prev_hash: bytes | None,
        levels: list[list[Entry]],
        last: int,
        lamport: int,
        first: int | None = None,
    ):
        self.one, self.rev, self.prev_hash, self.last, self.lamport = one, rev, prev_hash, last, lamport
        self.first = first  # the run first..last read by `read`, its pages in this revision
        self.levels = [list(lv) for lv in levels]
        self.revision: Revision | None = None

    @classmethod
    def sealing(cls, one: OnePush, revision: Revision) -> RevisionJob:
        """Only the sealing and signing of a revision already recorded."""
        job = cls(one, revision.rev, None, [], revision.seq, 0)
        job.revision = revision
        return job

    def read(self, run: LogRun) -> Made | LogRun:
        """The revision with the pages of `run` (operations first..last, just read), or the run itself if
        its pages are not for one job (large messages: LogWriter.write_pages seals them on both threads)."""
        assert self.first is not None
        contiguous(self.one.sid, self.first, self.last, run)
        if not self.one.writer.one_job(run):
            return run
        self.lamport = max(run.lams, default=0)
        return self.run(run)

    def run(self, run: LogRun | None = None) -> Made:
        one = self.one
        objects: list[tuple[bytes, bytes]] = []
        revision = self.revision
        if revision is None:
            levels = self.levels
            if run is not None:
                objects, entries = one.writer.sealed_pages(run)
                levels[0].extend(entries)
            prev = CIDV1_RAW_BLAKE3 + self.prev_hash if self.prev_hash is not None else None
            plain = encode_manifest(
                one.sid, one.writer.device, self.rev, one.head_pk, self.last, self.lamport, levels, prev, one.claims
            )
            revision = Revision(self.rev, plain, self.last, encode_levels(levels), prev, levels)
        ct, ref = one.writer.seal_manifest(revision.plain, one.head_pk, revision.rev)
        entry = RegistryEntry.create(one.head_key, revision.rev, head_data(ref.hash))
        frozen = tuple(tuple(lv) for lv in revision.levels) if revision.levels is not None else None
        return Made(revision, revision.pending(), objects, ct, ref, entry, frozen)


def contiguous(sid: str, a: int, b: int, run: LogRun) -> LogRun:
    """`run`, if it holds exactly the operations a..b of this device's log of `sid`."""
    have = run.seqs
    if len(have) != max(0, b - a + 1) or (have and have[0] != a) or not run.consecutive():
        raise SyncError(
            f"this device's log of {sid} is not contiguous between {a} and {b} (have {len(have)} "
            f"operations, first {have[:3]}, last {have[-3:]}); not pushing a torn log"
        )
    return run
