"""The objects a log is stored as (docs/FORMATS.md, "Snapshot layout"), plaintext side: pages (runs of
operations, column by column), nodes (lists of entries), parts objects (a page too large for one
object), and the entries that reference them, and the checks a reader makes of each. How a run of
operations is cut into pages and encoded: sync/pagecut.py. No store and no keys here: sealing is
sync/push.py's, fetching sync/pull.py's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import truediv
from typing import Any

from ..storage.model import Op, RemoteLog
from ..storage.pulledextra import pulled_extra
from ..stores.cid import CIDError
from . import dagcbor
from .crypto import EncryptedCID

# Plaintext bytes of one page: four 256 KiB chunks less 4 KiB, so that with padding and tags the object
# is under the 1 MiB limit. Large pages, because a full push costs per object as well as per byte: 1 MB
# objects take half the system time of 500 KB ones to write and fsync (measured here: 0.12 against
# 0.29 CPU-seconds for 185 MB), and a long first push got about 10% faster.
PAGE_MAX = 1020 * 1024
VERSION = 1  # of nodes, parts objects and manifests
PAGE_VERSION = 2  # pages are column by column since version 2
PAGE_HEAD = 512  # bounds a page's keys, column heads, version and type (device and session come on top)

T_PAGE = "sessiond/page"
MESSAGE = "message.add"
T_NODE = "sessiond/node"
T_PARTS = "sessiond/parts"


class LogError(ValueError):
    """A log in the store that is damaged, inconsistent or does not belong where it was found."""


class NewerFormat(LogError):
    """An object of a log in a format version past the one this sessiond reads: a newer sessiond wrote it."""


def check_version(v: object, reads: int, what: str) -> None:
    """`what` (an object's name) of version `v`, this sessiond reading version `reads`: NewerFormat past it,
    LogError for any other that is not it (an older one no longer read, or no version at all)."""
    if v == reads:
        return
    if isinstance(v, int) and not isinstance(v, bool) and v > reads:
        raise NewerFormat(f"{what} is of version {v}, written by a newer sessiond (this one reads version {reads})")
    raise LogError(f"{what} is of version {v!r}; this sessiond reads version {reads}")


# ---------------------------------------------------------------------------------------------- ops
def op_to_cbor(op: Op) -> dict:
    """An operation as one map in DAG-CBOR key order (b, k, l, s, t): the form `verify` compares
    (docs/FORMATS.md §4; pages store the same fields column by column)."""
    if op.kind == MESSAGE:
        b = op.body
        body: dict = {"c": b["chat"]}
        if extra := pulled_extra(b.get("extra")):  # (as a pull keeps it: a row an older pull stored too)
            body["e"] = dagcbor.canon(extra)
        if b.get("tokens") is not None:
            body["n"] = b["tokens"]
        body["r"] = b["role"]
        body["x"] = b["content"]
    else:
        body = dagcbor.canon(op.body)
    return {"b": body, "k": op.kind, "l": op.lamport, "s": op.seq, "t": round(op.created_at * 1000)}


# ---------------------------------------------------------------------------------------------- entries
@dataclass
class Entry:
    first: int  # first seq covered
    last: int  # last seq covered
    size: int  # plaintext bytes of the page, or of all pages below a node
    node: bool
    ref: EncryptedCID
    parts: bool = False  # a page too large for one object: ref is its list of parts
    # its DAG-CBOR encoding, made once: an entry is written into every manifest until it is folded
    # away, and each push's manifest and recorded tree are its entries' encodings put together
    _cbor: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def to_cbor(self) -> dict:
        return {
            "c": self.ref.to_bytes(),
            "f": self.first,
            "k": 1 if self.node else 2 if self.parts else 0,
            "n": self.size,
            "t": self.last,
        }

    def encoded(self) -> bytes:
        """dagcbor.encode(self.to_cbor()): its keys are in DAG-CBOR order already, and every value is
        an integer or bytes, which cbor2 writes in the shortest form."""
        if self._cbor is None:
            self._cbor = dagcbor.encode_ordered(self.to_cbor())
        return self._cbor

    @classmethod
    def from_cbor(cls, m: dict) -> Entry:
        try:
            kind = m["k"]
            if kind not in (0, 1, 2) or isinstance(kind, bool):
                raise ValueError(f"unknown kind {kind!r} (0 page, 1 node, 2 page in parts)")
            return cls(int(m["f"]), int(m["t"]), int(m["n"]), kind == 1, EncryptedCID.from_bytes(m["c"]), kind == 2)
        except (KeyError, TypeError, ValueError, CIDError) as exc:
            raise LogError(f"malformed entry: {exc}") from None


def encode_node(entries: list[Entry], sid: str, device: str) -> bytes:
    """The plaintext of a node listing `entries` (consecutive, in log order)."""
    return dagcbor.encode_ordered(
        {"d": device, "e": [e.to_cbor() for e in entries], "s": sid, "v": VERSION, "ty": T_NODE}
    )


def encode_parts(refs: list[EncryptedCID], sid: str, device: str) -> bytes:
    """The plaintext of a parts object: the parts of one page, in order."""
    return dagcbor.encode_ordered(
        {"d": device, "p": [ref.to_bytes() for ref in refs], "s": sid, "v": VERSION, "ty": T_PARTS}
    )


# ---------------------------------------------------------------------------------------------- reading and checking
def _check_owner(m: dict, what: str, sid: str, device: str) -> None:
    if m.get("s") != sid:
        raise LogError(f"{what} belongs to session {m.get('s')!r}, not {sid!r} (swapped objects)")
    if m.get("d") != device:
        raise LogError(f"{what} belongs to device {m.get('d')!r}, not {device!r} (swapped objects)")


def parse_parts(plain: bytes, e: Entry, sid: str, device: str) -> list[EncryptedCID]:
    """The checked list of parts of a page stored in parts (`plain` is its parts object)."""
    name = e.ref.hash.hex()[:16]
    try:
        m = dagcbor.decode(plain)
    except dagcbor.DagCborError as exc:
        raise LogError(f"parts object {name} is not valid: {exc}") from None
    if not isinstance(m, dict) or m.get("ty") != T_PARTS:
        raise LogError(f"object {name} is not a list of page parts")
    check_version(m.get("v"), VERSION, f"parts object {name}")
    _check_owner(m, "parts object", sid, device)
    try:
        refs = [EncryptedCID.from_bytes(p) for p in m["p"]]
    except (KeyError, TypeError, CIDError) as exc:
        raise LogError(f"parts object {name} is malformed: {exc}") from None
    if sum(r.plain.size for r in refs) != e.size or not refs:
        raise LogError(f"parts object {name} does not add up to the {e.size} bytes its entry names")
    return refs


def parse_node(plain: bytes, e: Entry, sid: str, device: str) -> list[Entry]:
    """The checked entries of the node `e` references (`plain` is its plaintext)."""
    name = e.ref.hash.hex()[:16]
    try:
        m = dagcbor.decode(plain)
    except dagcbor.DagCborError as exc:
        raise LogError(f"node {name} is not valid: {exc}") from None
    if not isinstance(m, dict) or m.get("ty") != T_NODE:
        raise LogError(f"object {name} is not a node")
    check_version(m.get("v"), VERSION, f"node {name}")
    _check_owner(m, "node", sid, device)
    children = [Entry.from_cbor(c) for c in m.get("e", [])]
    expect = e.first
    for c in children:
        if c.first != expect:
            raise LogError(f"node {name} has a gap or overlap at seq {expect}")
        expect = c.last + 1
    if expect - 1 != e.last:
        raise LogError(f"node {name} does not cover seqs {e.first}..{e.last}")
    return children


def parse_page(plain: bytes, e: Entry, sid: str, device: str) -> Page:
    """The checked page `e` references (`plain` is its plaintext, joined if it is in parts)."""
    name = e.ref.hash.hex()[:16]
    try:
        m = dagcbor.decode(plain, strict=False)
    except dagcbor.DagCborError as exc:
        raise LogError(f"page {name} is not valid: {exc}") from None
    if not isinstance(m, dict) or m.get("ty") != T_PAGE:
        raise LogError(f"object {name} is not a page")
    check_version(m.get("v"), PAGE_VERSION, f"page {name}")
    _check_owner(m, "page", sid, device)
    if m.get("f") != e.first:
        raise LogError(f"page {name} does not hold seqs {e.first}..{e.last}")
    n = e.last - e.first + 1
    cols: list[Any] = [m.get(k) for k in ("k", "l", "t", "c", "r", "x", "n", "b")]
    if not all(isinstance(c, list) and len(c) == n for c in cols):
        raise LogError(f"page {name} does not hold seqs {e.first}..{e.last} (columns of the wrong length)")
    page = Page(e.first, *cols)
    why = page.malformed()
    if why:
        raise LogError(f"page {name} is malformed: {why}")
    page.keep_extras()
    return page


_NONE = type(None)


@dataclass
class Page:
    """One page's operations, column by column, as stored (docs/FORMATS.md §4)."""

    first: int
    kinds: list
    lamports: list
    times: list
    chats: list
    roles: list
    contents: list
    tokens: list
    maps: list  # a message's extra fields or None; another operation's body

    def keep_extras(self) -> None:
        """Each message's extra fields as a pull keeps them (storage/pulledextra.py: those naming its own, and answer
        fields the API would not take, dropped): not stored, not carried on from here, as an imported file's fields
        that are not a message's are not (daemon/formats.py); its other extra fields (a newer sessiond's among them)
        kept."""
        maps = self.maps
        if maps.count(None) == len(maps):
            return
        for i, m in enumerate(maps):
            if m is not None and self.kinds[i] == MESSAGE:
                maps[i] = pulled_extra(m)

    def others(self) -> list[int]:
        """Indexes of the operations that are not messages."""
        if self.kinds.count(MESSAGE) == len(self.kinds):
            return []
        return [i for i, k in enumerate(self.kinds) if k != MESSAGE]

    def malformed(self) -> str | None:
        """What is wrong with the columns' types, or None. Checked a column at a time (in C)."""
        if not set(map(type, self.kinds)) <= {str}:
            return "an operation kind is not text"
        if not set(map(type, self.lamports)) <= {int} or not set(map(type, self.times)) <= {int}:
            return "a clock or time is not an integer"
        if not set(map(type, self.tokens)) <= {int, _NONE} or not set(map(type, self.maps)) <= {dict, _NONE}:
            return "a token count or map has the wrong type"
        others = self.others()
        text = {str, _NONE} if others else {str}
        for col, what in ((self.chats, "chat id"), (self.roles, "role"), (self.contents, "content")):
            if not set(map(type, col)) <= text or col.count(None) != len(others):
                return f"a message's {what} is missing or not text, or an operation that is not a message has one"
        for i in others:
            if (
                self.chats[i] is not None
                or self.roles[i] is not None
                or self.contents[i] is not None
                or self.tokens[i] is not None
            ):
                return f"operation {self.first + i} ({self.kinds[i]}) has message fields but is not a message"
            if self.maps[i] is None:
                return f"operation {self.first + i} ({self.kinds[i]}) has no body"
        return None

    def ops(self, sid: str, device: str, start: int = 0) -> list[Op]:
        out = []
        for i in range(start, len(self.kinds)):
            kind, t = self.kinds[i], self.times[i] / 1000
            if kind == MESSAGE:
                body = {
                    "chat": self.chats[i],
                    "role": self.roles[i],
                    "content": self.contents[i],
                    "tokens": self.tokens[i],
                    "extra": self.maps[i],
                }
            else:
                body = self.maps[i]
            out.append(Op(sid, device, self.first + i, self.lamports[i], kind, body, t))
        return out

    def into(self, log: RemoteLog, sid: str, device: str, start: int = 0) -> None:
        """Add this page's operations from index `start` to `log`: messages as insert rows, built
        column-wise; the other operations (few) one by one."""
        n = len(self.kinds)
        if start >= n:
            return
        others = self.others()
        extras: repeat[None] | list[str | None]
        if self.maps.count(None) == len(self.maps):
            extras = repeat(None)
        else:
            extras = [None] * n
            for i, m in enumerate(self.maps):
                if m is not None and self.kinds[i] == MESSAGE:
                    extras[i] = json.dumps(m, separators=(",", ":"), ensure_ascii=False)
            extras = extras[start:]
        k = slice(start, n)
        rows = zip(
            repeat(sid),
            self.chats[k],
            repeat(device),
            range(self.first + start, self.first + n),
            self.lamports[k],
            self.roles[k],
            self.contents[k],
            self.tokens[k],
            map(truediv, self.times[k], repeat(1000)),
            extras,
        )
        if others:
            log.messages.extend(compress(rows, map(MESSAGE.__eq__, self.kinds[k])))
            log.ops.extend(
                Op(sid, device, self.first + i, self.lamports[i], self.kinds[i], self.maps[i], self.times[i] / 1000)
                for i in others
                if i >= start
            )
        else:
            log.messages.extend(rows)
