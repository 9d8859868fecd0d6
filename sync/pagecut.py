"""How a run of operations is cut into pages and encoded as page plaintexts (docs/FORMATS.md, "Snapshot
layout": pages are column by column): the hot path of a push, so nothing here is done per operation in
Python where a C call can do it. The objects themselves (entries, nodes, parts) and a reader's checks are
sync/pages.py's; sealing and writing sync/push.py's.
"""

from __future__ import annotations

import itertools
import json
from bisect import bisect_left, bisect_right
from itertools import accumulate, compress, repeat
from operator import add, is_not

from ..storage.model import LogRun
from . import dagcbor
from .crypto import chunks_of
from .pages import PAGE_HEAD, PAGE_MAX, PAGE_VERSION, T_PAGE, LogError

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
    return PAGE_MAX - PAGE_HEAD - 4 * (len(device) + len(sid))


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
