"""One revision of this device's log of a session as a push records it in the outbox
(`sync_state.pending`) before anything of it is uploaded, and reads it back after a crash."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import dagcbor
from .pages import Entry

_ENC = dagcbor.encode_ordered
_PENDING_HEAD = dagcbor.head(5, 4)  # the map {m, r, s, t} recorded in sync_state.pending
_PENDING_HEAD_U = dagcbor.head(5, 5)  # {m, r, s, t, u}: with the pages a compaction merged away


@dataclass
class Revision:
    """One revision of this device's log, recorded in `sync_state.pending` before anything of it is
    uploaded: the manifest's plaintext, the last seq it covers, its level tree (encoded as recorded), and
    the link to the manifest it follows (`prev`, which the push lets go once it is published), the pages
    a compaction merged away (`merged`, let go with it), and the levels themselves when this process
    built them (None when read back after a crash)."""

    rev: int
    plain: bytes
    seq: int
    tree: bytes
    prev: bytes | None
    levels: list[list[Entry]] | None = None
    merged: list[bytes] = field(default_factory=list)

    def pending(self) -> bytes:
        """dagcbor.encode({"m": plain, "r": rev, "s": seq, "t": levels, "u": merged}), put together from
        its parts (keys in DAG-CBOR order; the tree encoded already; "u" only if a compaction merged any)."""
        return b"".join(
            (_PENDING_HEAD_U if self.merged else _PENDING_HEAD, _ENC("m"), _ENC(self.plain), _ENC("r"))
            + (_ENC(self.rev), _ENC("s"), _ENC(self.seq), _ENC("t"), self.tree)
            + ((_ENC("u"), _ENC(self.merged)) if self.merged else ())
        )

    @classmethod
    def recorded(cls, pending: bytes) -> Revision:
        """A revision recorded by a push that a crash or a failure cut short (decoded and checked)."""
        p = dagcbor.decode(pending)
        prev = dagcbor.decode(p["m"]).get("prev")
        tree, merged = dagcbor.encode(p["t"]), [bytes(h) for h in p.get("u", ())]
        return cls(p["r"], p["m"], p["s"], tree, bytes(prev) if prev is not None else None, merged=merged)
