"""The cut of a long run into pages does not depend on how the run is read: the same operations give the
same pages (so the same objects: content addressing, dedup) whether they are read at once or in chunks of
any size, by one worker thread or several, whatever order the workers take their turns in."""

from __future__ import annotations

import contextlib
import itertools

from sessiond.storage.model import LogRun
from sessiond.stores import FileStore
from sessiond.sync import dagcbor
from sessiond.sync import pagecut as pagecut_mod
from sessiond.sync import pages as pages_mod
from sessiond.sync import push as push_mod
from sessiond.sync.pagecut import cut
from sessiond.sync.push import LogWriter
from sessiond.sync.workers import Workers

SID, DEV = "sess", "dev0"


def _records(n: int) -> list[tuple]:
    """Messages whose fields vary in length across the run (a rare long chat id, roles of 4 and 9
    characters, a few extra maps) and a few other operations: what made a chunk's page sizes depend on
    which operations happened to share its chunk."""
    out = []
    for i in range(n):
        seq, t = i + 1, 1700000000 + i / 1000
        if i % 1999 == 7:
            out.append((seq, seq, "checkpoint.add", f'{{"at": {i}}}', t, None, None, None, None, None))
            continue
        chat = "c" * 200 if i % 2500 == 1300 else "main"
        role = "assistant" if i % 3 == 0 else "user"
        extra = f'{{"k": {i}}}' if i % 701 == 0 else None
        out.append((seq, seq, "message.add", None, t, chat, role, f"{i} " + "word " * (i % 40), None, extra))
    return out


def _small_pages(monkeypatch) -> None:
    monkeypatch.setattr(pages_mod, "PAGE_MAX", 30_000)
    monkeypatch.setattr(pagecut_mod, "PAGE_MAX", 30_000)
    monkeypatch.setattr(push_mod, "PAGE_MAX", 30_000)


def test_the_cut_of_a_run_is_the_cut_of_its_prefixes(monkeypatch):
    """Every page of the cut of a prefix but its last is a page of the cut of the whole run: a chunked
    reader that keeps each chunk's last page for the next chunk cuts as one reader of the whole run."""
    _small_pages(monkeypatch)
    recs = _records(3000)
    whole = cut(LogRun.from_records(recs), SID, DEV)[0]
    for k in (1, 17, 900, 1299, 1301, 2500, 2999):
        starts = cut(LogRun.from_records(recs[:k]), SID, DEV)[0][:-1]  # where its pages begin
        assert len(starts) > 3 or k < 900
        assert starts == whole[: len(starts)], k


def _loader(recs):
    @contextlib.contextmanager
    def open_loader():
        def read(a, b):
            return LogRun.from_records(recs[a - 1 : b])

        yield read

    return open_loader


async def test_a_long_push_gives_the_same_pages_however_it_is_read(tmp_path, monkeypatch):
    async def no_short(a, b):
        raise AssertionError("a long run is read by the workers")

    _small_pages(monkeypatch)
    recs = _records(12_000)
    store = FileStore(str(tmp_path / "store"))
    whole = await LogWriter(SID, DEV, bytes(range(32)), store).write_pages(LogRun.from_records(recs))
    want = [(e.first, e.last, e.ref.hash) for e in whole]
    # chunks of 16 operations (less than a page: the carried page takes whole chunks) up to ~4000
    for stream_bytes, threads in ((3_000, 2), (40_000, 1), (40_000, 2), (150_000, 2), (700_000, 3)):
        monkeypatch.setattr(push_mod, "STREAM_BYTES", stream_bytes)
        workers = Workers(push_threads=threads)
        try:
            writer = LogWriter(SID, DEV, bytes(range(32)), store, workers=workers)
            entries, _ = await writer.write_run(no_short, _loader(recs), 1, len(recs))
        finally:
            workers.close()
        assert [(e.first, e.last, e.ref.hash) for e in entries] == want, (stream_bytes, threads)
    await store.close()


def test_a_column_of_one_repeated_item_encodes_as_cbor2_would():
    """encode_pages writes a column of one text or null repeated without cbor2: the same bytes."""
    for col in ([], [None] * 3, ["main"] * 30, ["\u00e9t\u00e9"] * 2, ["user", "user", "assistant"], [1, 1.0, True]):
        assert pagecut_mod._column(col) == dagcbor.encode_ordered(col), col


def test_a_column_of_a_few_texts_encodes_as_cbor2_would(monkeypatch):
    """A column of a few distinct texts or null (the roles) is written by looking each one's item up, not
    by cbor2: the same bytes; a column with a map, a number or too many texts goes to cbor2."""
    calls = []
    enc = pagecut_mod._enc
    monkeypatch.setattr(pagecut_mod, "_enc", lambda v: calls.append(v) or enc(v))
    many = [f"r{i}" for i in range(pagecut_mod._FEW + 1)]
    for col, by_cbor2 in (
        (["user", "assistant"] * 50, False),
        ([None, "user", "\u00e9t\u00e9", None, "x" * 300], False),
        (["user", None, "tool"] * 7, False),
        ([None, {"k": 1}, None], True),
        ([None, 3, None], True),
        (["a", 1, "a"], True),
        (many, True),
    ):
        calls.clear()
        assert pagecut_mod._column(col) == dagcbor.encode_ordered(col), col
        assert (col in calls) == by_cbor2, col


def test_a_join_of_runs_encodes_its_pages_from_the_pieces_of_its_blob(monkeypatch):
    """A join of runs (a long push's carried page and the next chunk's first operations) keeps the blobs
    as pieces: its pages, other operations between the messages included, are those of the run read
    whole, and the joined blob is made only when asked for."""
    _small_pages(monkeypatch)
    whole = LogRun.from_records(_records(9000))
    cuts = cut(whole, SID, DEV)
    want = pagecut_mod.encode_pages(whole, SID, DEV, cuts)
    for edges in ((0, 4000, 9000), (0, 7, 8, 2500, 9000), (0, 1, 9000), (0, 8999, 9000), (0, 0, 3000, 9000)):
        parts = [whole.tail(a).head(b - a) for a, b in itertools.pairwise(edges)]
        joined = parts[0]
        for p in parts[1:]:
            joined = joined + p
        got = pagecut_mod.encode_pages(joined, SID, DEV, cuts)
        chunked = pagecut_mod.encode_page_chunks(joined, SID, DEV, cuts)
        assert joined._parts is not None  # encoded from the pieces: the join not made
        assert got == want, edges
        assert [(b"".join(c), lo, hi) for c, lo, hi in chunked] == want, edges
        assert bytes(joined.blob) == bytes(whole.blob) and joined._parts is None


async def test_the_last_chunks_of_a_long_run_are_halves_of_what_is_left(tmp_path, monkeypatch):
    """So that the workers end together: once less than two chunks are left, each chunk handed out is half
    of the rest (down to an eighth of a chunk); the pages are those of the run read whole."""

    async def no_short(a, b):
        raise AssertionError("a long run is read by the workers")

    _small_pages(monkeypatch)
    monkeypatch.setattr(push_mod, "STREAM_BYTES", 100_000)
    recs = _records(12_000)
    store = FileStore(str(tmp_path / "store"))
    whole = await LogWriter(SID, DEV, bytes(range(32)), store).write_pages(LogRun.from_records(recs))
    read: list[tuple[int, int]] = []

    @contextlib.contextmanager
    def open_loader():
        def load(a, b):
            read.append((a, b))
            return LogRun.from_records(recs[a - 1 : b])

        yield load

    workers = Workers(push_threads=2)
    try:
        writer = LogWriter(SID, DEV, bytes(range(32)), store, workers=workers)
        entries, _ = await writer.write_run(no_short, open_loader, 1, len(recs))
    finally:
        workers.close()
    await store.close()
    assert [(e.first, e.last, e.ref.hash) for e in entries] == [(e.first, e.last, e.ref.hash) for e in whole]
    read.sort()
    assert read[0][0] == 1 and read[-1][1] == len(recs)
    assert all(b + 1 == c for (_, b), (c, _) in itertools.pairwise(read))  # every operation read once
    sizes = [b - a + 1 for a, b in read]
    full = max(sizes)
    assert len(read) > 6 and sizes[-1] < full // 2, sizes
    tail = [(len(recs) - a + 1, b - a + 1) for a, b in read if len(recs) - a + 1 < full]
    assert len(tail) >= 2, sizes
    for rest, size in tail:  # halves of the rest, or an eighth of a chunk at least
        assert size <= max((rest + 1) // 2, full // 8 + 1), (rest, size, sizes)
