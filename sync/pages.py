"""The objects a log is stored as (docs/FORMATS.md, "Snapshot layout"), plaintext side: pages (runs of
operations, column by column), nodes (lists of entries), parts objects (a page too large for one
object), and the entries that reference them; how a run of operations is cut into pages; and the
checks a reader makes of each. No store and no keys here: sealing is sync/push.py's, fetching
sync/pull.py's.
"""

from __future__ import annotations

import itertools
import json
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from itertools import accumulate, compress, repeat
from operator import add, is_not, truediv
from typing import Any

from ..storage.model import LogRun, Op, RemoteLog
from ..stores.cid import CIDError
from . import dagcbor
from .crypto import EncryptedCID, chunks_of

# Plaintext bytes of one page: four 256 KiB chunks less 4 KiB, so that with padding and tags the object
# is under the 1 MiB limit. Large pages, because a full push costs per object as well as per byte: 1 MB
# objects take half the system time of 500 KB ones to write and fsync (measured here: 0.12 against
# 0.29 CPU-seconds for 185 MB), and a long first push got about 10% faster.
PAGE_MAX = 1020 * 1024
VERSION = 1  # of nodes, parts objects and manifests
PAGE_VERSION = 2  # pages are column by column since version 2
_PAGE_HEAD = 512  # bounds a page's keys, column heads, version and type (device and session come on top)

T_PAGE = "sessiond/page"
MESSAGE = "message.add"
T_NODE = "sessiond/node"
T_PARTS = "sessiond/parts"


class LogError(ValueError):
    """A log in the store that is damaged, inconsistent or does not belong where it was found."""


# ---------------------------------------------------------------------------------------------- ops
def op_to_cbor(op: Op) -> dict:
    """An operation as one map in DAG-CBOR key order (b, k, l, s, t): the form `verify` compares
    (docs/FORMATS.md §4; pages store the same fields column by column)."""
    if op.kind == MESSAGE:
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


# ---------------------------------------------------------------------------------------------- writing pages
_head = dagcbor.head
_enc = dagcbor.encode_ordered
_VERSION_ITEM = _enc("v") + _enc(PAGE_VERSION)
_TYPE_ITEM = _enc("ty") + _enc(T_PAGE)
_NULL = b"\xf6"  # the contents item of an operation that is not a message


def _column(values: list) -> bytes:
    """A column as its CBOR array. Most columns of most pages hold one text or null throughout (the
    kind, the chat, no map, no tokens): that is one item repeated, without cbor2 walking the list. A
    column of a few texts (the roles) is each one's item looked up and joined: half cbor2's time. Only
    texts and null: for them alone does == mean the same encoding (1 == 1.0 == True)."""
    first = values[0] if values else 0
    if first is None or type(first) is str:
        if values.count(first) == len(values):
            return _head(4, len(values)) + _enc(first) * len(values)
        try:
            distinct = set(values)
        except TypeError:  # a map among them (the map column)
            return _enc(values)
        if len(distinct) <= _FEW and all(v is None or type(v) is str for v in distinct):
            items = {v: _enc(v) for v in distinct}
            return _head(4, len(values)) + b"".join(map(items.__getitem__, values))
    return _enc(values)


_FEW = 64  # distinct texts at most in a column that _column encodes by looking each one's item up


def _ints(values: list[int]) -> bytes:
    """A column of integers (a run's times) as its CBOR array: one item repeated when it holds one value
    throughout (the times of messages appended together: an import's 5,000 at a time), without cbor2
    walking the list. The values are ints (LogRun's times are), so == means the same encoding."""
    if values and values[0] == values[-1] and values.count(values[0]) == len(values):
        return _head(4, len(values)) + _enc(values[0]) * len(values)
    return _enc(values)


def _contents(run: LogRun, offs: dict[int, int], others: list[int], lo: int, hi: int) -> list:
    """The items of a page's contents column, operations lo..hi-1: slices of the run's blob (which holds
    the messages' items back to back), with null for each operation that is not a message (`others`)."""
    out: list = []
    at = offs[lo]
    for i in others[bisect_left(others, lo) : bisect_left(others, hi)]:
        out += run.blob_views(at, offs[i])
        out.append(_NULL)
        at = offs[i]
    out += run.blob_views(at, offs[hi])
    return out


def cut(run: LogRun, sid: str, device: str) -> tuple[list[int], list]:
    """Where the pages of a run of operations (consecutive seqs) begin: ([0, ..., len(run)], the
    map column). Pages are at most PAGE_MAX bytes; an operation larger than that is a page of
    its own. Sizes are bounded from above, without encoding anything but the maps."""
    cum, col_b = measure(run)
    return [0, *page_ends(cum, page_limit(sid, device))], col_b


def page_limit(sid: str, device: str) -> int:
    """What a page's operations may take (cut's bound), its keys, heads and owner aside."""
    return PAGE_MAX - _PAGE_HEAD - 4 * (len(device) + len(sid))


def page_ends(cum: list[int], limit: int, start: int = 0) -> list[int]:
    """Where the pages from operation `start` on end (exclusive), greedily: each as many operations as fit
    in `limit` (by `cum`, measure's), at least one."""
    n, ends, lo = len(cum) - 1, [], start
    while lo < n:
        lo = max(lo + 1, bisect_right(cum, cum[lo] + limit) - 1)
        ends.append(lo)
    return ends


def measure(run: LogRun) -> tuple[list[int], list]:
    """(cum, the map column) of a run of operations (consecutive seqs): cum[i] bounds from above the bytes
    operations 0..i-1 take in a page (cum[0] = 0). Each operation is bounded by its own fields alone, so
    a long push measures each chunk it reads by itself, beside the others (sync/push.py's _RunJob)."""
    n = len(run)
    if not n:
        return [0], []
    first, sizes = run.seqs[0], run.sizes
    if not run.consecutive():
        raise LogError(f"operations to write are not one run of consecutive seqs from {first}")
    col_b: list = [None] * n
    est = list(sizes)  # bytes per operation (-1: not a message, its body counted below)
    if run.bodies.count(None) != n or run.extras.count(None) != n:
        # the few operations with a map (another operation's body, a message's extra fields), found in C
        with_body = compress(range(n), map(is_not, run.bodies, repeat(None)))
        for i in sorted({*with_body, *compress(range(n), run.extras)}):
            body, extra = run.bodies[i], run.extras[i]
            if body is not None:
                col_b[i] = dagcbor.canon(json.loads(body))
            elif e := json.loads(extra):
                col_b[i] = dagcbor.canon(e)
            if col_b[i] is not None:
                est[i] = max(est[i], 0) + len(dagcbor.encode_ordered(col_b[i]))
    # an operation that is neither a message nor has a body (not written by this sessiond); none when every
    # content head is of one width (every operation a message: known for a run read, without a scan)
    if not run.head_width() and -1 in est:
        est = list(map(max, est, repeat(0)))
    # per operation besides content and map: seven more columns, each item at most a 9-byte head plus
    # its text. Each operation's own texts, never a maximum over the run: the cut of a run is then the
    # cut of any prefix of it but the prefix's last page, so a long push reading in chunks of any size
    # cuts the same pages (same objects) as one reader of the whole run (sync/push.py's _RunJob). A
    # column whose texts are all of one length (one chat, one kind) adds a constant, not a lookup each.
    const, varying = 64, []
    for col in (run.kinds, run.chats, run.roles):
        lengths = {v: len(v.encode()) if v else 0 for v in set(col)}
        if len(set(lengths.values())) == 1:
            const += next(iter(lengths.values()))
        else:
            varying.append((col, lengths))
    if not varying:
        return list(accumulate(map(add, est, repeat(const)), initial=0)), col_b
    # the constant goes into the first varying column's lengths: one map over the run fewer
    (col, lengths), *rest = varying
    per_op = map(add, est, map({v: z + const for v, z in lengths.items()}.__getitem__, col))
    for col, lengths in rest:
        per_op = map(add, per_op, map(lengths.__getitem__, col))
    return list(accumulate(per_op, initial=0)), col_b


def encode_pages(
    run: LogRun, sid: str, device: str, cut_: tuple[list[int], list] | None = None, count: int | None = None
) -> list[tuple[bytes, int, int]]:
    """Encode a run of operations as page plaintexts: [(plaintext, first seq, last seq)], cut as
    `cut_` (default: cut(run, ...)), the first `count` pages of it (default: all). The hot path of
    a push, so nothing here is done per operation in Python: the small columns are one cbor2 call
    each per page, and the contents column is a slice of the run's blob, which holds the contents as
    their CBOR items already (LogRun), without an object per message."""
    return [(b"".join(parts), lo, hi) for parts, lo, hi in _page_items(run, sid, device, cut_, count)]


def encode_page_chunks(
    run: LogRun, sid: str, device: str, cut_: tuple[list[int], list] | None = None, count: int | None = None
) -> list[tuple[list[bytes], int, int]]:
    """encode_pages' pages, each plaintext as the pieces it is sealed in (crypto.chunks_of), not joined:
    sealed by crypto.encrypt_chunks as they are, where a joined page is cut into copies of its chunks
    (a long push: one copy of each page's bytes fewer, with the GIL held)."""
    return [(chunks_of(parts), lo, hi) for parts, lo, hi in _page_items(run, sid, device, cut_, count)]


def _page_items(
    run: LogRun, sid: str, device: str, cut_: tuple[list[int], list] | None, count: int | None
) -> list[tuple[list, int, int]]:
    """The pages of encode_pages, each as its encoded items in order (bytes and views of the run's blob)."""
    bounds, col_b = cut_ or cut(run, sid, device)
    count = len(bounds) - 1 if count is None else count
    if not count:
        return []
    upto = bounds[count]
    first, times = run.seqs[0], run.times
    if run.head_width():  # every operation a message (known for a run read): no scan for the others
        others: list[int] = []
    else:
        sizes = run.sizes[:upto]
        others = [i for i, z in enumerate(sizes) if z < 0] if -1 in sizes else []
    # where each page's contents begin and end in the blob, and each other operation's place: summed
    # from the sizes a stretch at a time, not a list of every operation's offset
    at = sorted({*bounds[: count + 1], *others})
    offs = dict(zip(at, run.offsets_at(at)))
    kinds, chats, roles = run.kinds, run.chats, run.roles
    dev, sid_item = _enc(device), _enc(sid)
    out = []
    for lo, hi in itertools.pairwise(bounds[: count + 1]):
        # the map, keys in DAG-CBOR order (length, then bytewise): b c d f k l n r s t v x ty
        parts = [
            b"\xad",
            b"\x61b",
            _column(col_b[lo:hi]),
            b"\x61c",
            _column(chats[lo:hi]),
            b"\x61d",
            dev,
            b"\x61f",
            _enc(first + lo),
            b"\x61k",
            _column(kinds[lo:hi]),
            b"\x61l",
            _enc(run.lams[lo:hi]),
            b"\x61n",
            _column(run.toks[lo:hi]),
            b"\x61r",
            _column(roles[lo:hi]),
            b"\x61s",
            sid_item,
            b"\x61t",
            _ints(times[lo:hi]),
            _VERSION_ITEM,
            b"\x61x",
            _head(4, hi - lo),
        ]
        parts += _contents(run, offs, others, lo, hi)
        parts.append(_TYPE_ITEM)
        out.append((parts, first + lo, first + hi - 1))
    return out


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
    if not isinstance(m, dict) or m.get("ty") != T_PARTS or m.get("v") != VERSION:
        raise LogError(f"object {name} is not a list of page parts")
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
    if m.get("v") != PAGE_VERSION:
        raise LogError(f"page {name} is of version {m.get('v')!r}; this sessiond reads version {PAGE_VERSION}")
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
