"""One device's log of one session, as encrypted objects in a store (docs/FORMATS.md, "Snapshot layout").

The log is a sequence of operations numbered 1..n. It is stored as *pages* (runs of operations) and
*nodes* (lists of entries), all encrypted objects, and a *head manifest* that lists, level by level,
the entries that cover the log:

    levels[L] is a list of at most F-1 entries once a push completes; entries of level L+1 cover
    earlier operations than entries of level L. A push appends a page of the new operations to
    level 0; whenever a level holds F entries, its oldest F become one entry of the level above:
    one merged page if they are pages that fit in PAGE_MAX together, otherwise a node listing them.

So a push writes the new operations once, plus a manifest of O(F log n) entries, and every operation
is rewritten O(log n) times over its life: the cost of an append stays flat as the session grows.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Awaitable, Callable

from sessiond.storage.cid import CIDError
from sessiond.storage.db import Op
from sessiond.storage.store import Store

from . import dagcbor
from .crypto import EncryptedCID, manifest_key, object_key, open_sealed, seal

FANOUT = 16
PAGE_MAX = 512 * 1024  # plaintext bytes of one page: two 256 KiB chunks, well under the 1 MiB object limit
VERSION = 1

T_PAGE = "sessiond/page"
T_NODE = "sessiond/node"
T_MANIFEST = "sessiond/manifest"


class LogError(ValueError):
    """A log in the store that is damaged, inconsistent or does not belong where it was found."""


# ---------------------------------------------------------------------------------------------- ops
def op_to_cbor(op: Op) -> dict:
    """An operation as a map in DAG-CBOR key order (b, k, l, s, t)."""
    if op.kind == "message.add":
        b = op.body
        body: dict = {"c": b["chat"]}
        if b.get("extra"):
            body["e"] = dagcbor.canon(b["extra"])
        if b.get("tokens") is not None:
            body["n"] = b["tokens"]
        body["r"] = b["role"]
        body["x"] = b["content"]
    else:
        body = dagcbor.canon(op.body)
    return {"b": body, "k": op.kind, "l": op.lamport, "s": op.seq, "t": round(op.created_at * 1000)}


def op_from_cbor(sid: str, device: str, m: dict) -> Op:
    try:
        kind = m["k"]
        body = m["b"]
        if kind == "message.add":
            body = {"chat": body["c"], "role": body["r"], "content": body["x"], "tokens": body.get("n"),
                    "extra": body.get("e")}
        return Op(sid, device, int(m["s"]), int(m["l"]), kind, body, m["t"] / 1000)
    except (KeyError, TypeError, ValueError) as exc:
        raise LogError(f"malformed operation in page: {exc!r}") from None


# ---------------------------------------------------------------------------------------------- entries
@dataclass
class Entry:
    first: int  # first seq covered
    last: int  # last seq covered
    size: int  # plaintext bytes of the page, or of all pages below a node
    node: bool
    ref: EncryptedCID

    def to_cbor(self) -> dict:
        return {"c": self.ref.to_bytes(), "f": self.first, "k": 1 if self.node else 0, "n": self.size, "t": self.last}

    @classmethod
    def from_cbor(cls, m: dict) -> "Entry":
        try:
            return cls(int(m["f"]), int(m["t"]), int(m["n"]), bool(m["k"]), EncryptedCID.from_bytes(m["c"]))
        except (KeyError, TypeError, ValueError, CIDError) as exc:
            raise LogError(f"malformed entry: {exc}") from None


@dataclass
class Written:
    """What a push put in the store (for statistics and the benchmark)."""

    objects: int = 0
    bytes: int = 0


class LogWriter:
    """Builds pages, nodes and manifests for one (session, device) log."""

    def __init__(self, sid: str, device: str, session_key: bytes, store: Store, timeout: float = 30.0):
        self.sid = sid
        self.device = device
        self.key = session_key
        self.store = store
        self.timeout = timeout
        self.written = Written()

    async def put(self, ciphertexts: list[bytes]) -> None:
        if not ciphertexts:
            return
        put_many = getattr(self.store, "put_many", None)
        if put_many is not None:
            await asyncio.wait_for(put_many(ciphertexts), self.timeout)
        else:
            for c in ciphertexts:
                await asyncio.wait_for(self.store.put(c), self.timeout)
        self.written.objects += len(ciphertexts)
        self.written.bytes += sum(len(c) for c in ciphertexts)

    def _seal(self, plaintext: bytes) -> tuple[bytes, EncryptedCID]:
        return seal(plaintext, object_key(self.key, plaintext))

    def pages_for(self, ops: list[Op]) -> list[tuple[bytes, int, int]]:
        """Cut operations into page plaintexts of at most PAGE_MAX bytes: [(plaintext, first, last)]."""
        pages, run, size = [], [], 0
        first = prev = 0
        for op in ops:
            enc = dagcbor.encode_ordered(op_to_cbor(op))
            if run and size + len(enc) > PAGE_MAX:
                pages.append((_page_map(self.device, self.sid, run), first, prev))
                run, size = [], 0
            if not run:
                first = op.seq
            run.append(enc)
            size += len(enc)
            prev = op.seq
        if run:
            pages.append((_page_map(self.device, self.sid, run), first, prev))
        return pages

    def _build_pages(self, ops: list[Op]) -> tuple[list[Entry], list[bytes]]:
        entries, blobs = [], []
        for plain, first, last in self.pages_for(ops):
            ct, ref = self._seal(plain)
            blobs.append(ct)
            entries.append(Entry(first, last, len(plain), False, ref))
        return entries, blobs

    async def write_pages(self, ops: list[Op]) -> list[Entry]:
        # Encoding and sealing many operations is CPU work: off the event loop, so the API stays quick.
        entries, blobs = (self._build_pages(ops) if len(ops) < 64
                          else await asyncio.to_thread(self._build_pages, ops))
        await self.put(blobs)
        return entries

    async def compact(self, levels: list[list[Entry]],
                      load_ops: Callable[[int, int], Awaitable[list[Op]]]) -> list[list[Entry]]:
        """Fold full levels upward (see the module doc). `load_ops(first, last)` gives this log's operations."""
        levels = [list(lv) for lv in levels]
        lvl = 0
        while lvl < len(levels):
            while len(levels[lvl]) >= FANOUT:
                group, levels[lvl] = levels[lvl][:FANOUT], levels[lvl][FANOUT:]
                size = sum(e.size for e in group)
                if not any(e.node for e in group) and size <= PAGE_MAX:
                    merged = await self.write_pages(await load_ops(group[0].first, group[-1].last))
                    new = merged[0] if len(merged) == 1 else await self._node(merged)
                else:
                    new = await self._node(group)
                if lvl + 1 == len(levels):
                    levels.append([])
                levels[lvl + 1].append(new)
            lvl += 1
        return levels

    async def _node(self, entries: list[Entry]) -> Entry:
        plain = dagcbor.encode_ordered({"d": self.device, "e": [e.to_cbor() for e in entries], "s": self.sid,
                                        "v": VERSION, "ty": T_NODE})
        ct, ref = self._seal(plain)
        await self.put([ct])
        return Entry(entries[0].first, entries[-1].last, sum(e.size for e in entries), True, ref)

    def manifest(self, rev: int, head_pk: bytes, last_seq: int, lamport: int, levels: list[list[Entry]],
                 prev: bytes | None) -> bytes:
        m = {"d": self.device, "k": head_pk, "l": [[e.to_cbor() for e in lv] for lv in levels], "n": last_seq,
             "r": rev, "s": self.sid, "v": VERSION, "ty": T_MANIFEST, "lam": lamport}
        if prev is not None:
            m["prev"] = dagcbor.Link(prev)
        return dagcbor.encode(m)

    def seal_manifest(self, plain: bytes, head_pk: bytes, rev: int) -> tuple[bytes, EncryptedCID]:
        # Not padded: a reader knows the manifest's size only from the ciphertext.
        return seal(plain, manifest_key(self.key, head_pk, rev), pad=False)


def _page_map(device: str, sid: str, encoded_ops: list[bytes]) -> bytes:
    """{"d": device, "o": [ops...], "s": session, "v": 1, "ty": "sessiond/page"} in DAG-CBOR order,
    with the operations spliced in already encoded."""
    out = [b"\xa5", dagcbor.encode_ordered("d"), dagcbor.encode_ordered(device), dagcbor.encode_ordered("o"),
           _array_head(len(encoded_ops))]
    out.extend(encoded_ops)
    out += [dagcbor.encode_ordered("s"), dagcbor.encode_ordered(sid), dagcbor.encode_ordered("v"),
            dagcbor.encode_ordered(VERSION), dagcbor.encode_ordered("ty"), dagcbor.encode_ordered(T_PAGE)]
    return b"".join(out)


def _array_head(n: int) -> bytes:
    if n < 24:
        return bytes([0x80 | n])
    if n < 256:
        return bytes([0x98, n])
    if n < 65536:
        return b"\x99" + n.to_bytes(2, "big")
    if n < (1 << 32):
        return b"\x9a" + n.to_bytes(4, "big")
    return b"\x9b" + n.to_bytes(8, "big")


# ---------------------------------------------------------------------------------------------- reading
@dataclass
class Manifest:
    sid: str
    device: str
    head_pk: bytes
    rev: int
    last_seq: int
    lamport: int
    levels: list[list[Entry]]
    prev: bytes | None

    def entries(self) -> list[Entry]:
        """All top entries in log order (highest level first)."""
        return [e for lv in reversed(self.levels) for e in lv]


def parse_manifest(plain: bytes, *, sid: str, head_pk: bytes, rev: int) -> Manifest:
    try:
        m = dagcbor.decode(plain)
    except dagcbor.DagCborError as exc:
        raise LogError(f"head manifest is not valid: {exc}") from None
    if not isinstance(m, dict) or m.get("ty") != T_MANIFEST:
        raise LogError("head object is not a sessiond manifest")
    if m.get("v") != VERSION:
        raise LogError(f"manifest version {m.get('v')!r} is not supported by this sessiond")
    if m.get("s") != sid:
        raise LogError(f"manifest belongs to session {m.get('s')!r}, not {sid!r} (swapped objects)")
    if m.get("k") != head_pk:
        raise LogError("manifest names another signing key than the head that points to it")
    if m.get("r") != rev:
        raise LogError(f"manifest says revision {m.get('r')!r} but its head has revision {rev} (replayed)")
    try:
        levels = [[Entry.from_cbor(e) for e in lv] for lv in m["l"]]
        man = Manifest(sid, str(m["d"]), head_pk, rev, int(m["n"]), int(m.get("lam", 0)), levels,
                       bytes(m["prev"]) if m.get("prev") is not None else None)
    except (KeyError, TypeError, ValueError) as exc:
        raise LogError(f"malformed manifest: {exc!r}") from None
    expect = 1
    for e in man.entries():
        if e.first != expect or e.last < e.first:
            raise LogError(f"manifest entries are not contiguous at seq {expect} (reordered or damaged manifest)")
        expect = e.last + 1
    if expect - 1 != man.last_seq:
        raise LogError(f"manifest covers up to seq {expect - 1} but claims {man.last_seq}")
    return man


class LogReader:
    """Fetches and checks a log's objects. Every object's hash, tag, plaintext id, session, device and
    sequence range is checked; anything else raises LogError or a store error naming the object."""

    def __init__(self, sid: str, device: str, store: Store, timeout: float = 30.0):
        self.sid = sid
        self.device = device
        self.store = store
        self.timeout = timeout
        self.fetched = 0

    async def _get(self, ref: EncryptedCID) -> bytes:
        ct = await asyncio.wait_for(self.store.get(ref.hash), self.timeout)
        self.fetched += 1
        return open_sealed(ct, ref)

    def _check_owner(self, m: dict, what: str) -> None:
        if m.get("s") != self.sid:
            raise LogError(f"{what} belongs to session {m.get('s')!r}, not {self.sid!r} (swapped objects)")
        if m.get("d") != self.device:
            raise LogError(f"{what} belongs to device {m.get('d')!r}, not {self.device!r} (swapped objects)")

    async def ops(self, entries: list[Entry], after_seq: int = 0) -> list[Op]:
        """The operations of `entries` with seq > after_seq, in order."""
        out: list[Op] = []
        for e in entries:
            if e.last <= after_seq:
                continue
            plain = await self._get(e.ref)
            if e.node:
                try:
                    m = dagcbor.decode(plain)
                except dagcbor.DagCborError as exc:
                    raise LogError(f"node {e.ref.hash.hex()[:16]} is not valid: {exc}") from None
                if not isinstance(m, dict) or m.get("ty") != T_NODE:
                    raise LogError(f"object {e.ref.hash.hex()[:16]} is not a node")
                self._check_owner(m, "node")
                children = [Entry.from_cbor(c) for c in m.get("e", [])]
                expect = e.first
                for c in children:
                    if c.first != expect:
                        raise LogError(f"node {e.ref.hash.hex()[:16]} has a gap or overlap at seq {expect}")
                    expect = c.last + 1
                if expect - 1 != e.last:
                    raise LogError(f"node {e.ref.hash.hex()[:16]} does not cover seqs {e.first}..{e.last}")
                out.extend(await self.ops(children, after_seq))
            else:
                try:
                    m = dagcbor.decode(plain, strict=False)
                except dagcbor.DagCborError as exc:
                    raise LogError(f"page {e.ref.hash.hex()[:16]} is not valid: {exc}") from None
                if not isinstance(m, dict) or m.get("ty") != T_PAGE:
                    raise LogError(f"object {e.ref.hash.hex()[:16]} is not a page")
                self._check_owner(m, "page")
                ops = [op_from_cbor(self.sid, self.device, o) for o in m.get("o", [])]
                if [o.seq for o in ops] != list(range(e.first, e.last + 1)):
                    raise LogError(f"page {e.ref.hash.hex()[:16]} does not hold seqs {e.first}..{e.last}")
                out.extend(o for o in ops if o.seq > after_seq)
        return out
