"""Pages (column by column) and checkpoint chains: the push's and the import's hot paths, checked
against the plain definitions they speed up."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import os
import sqlite3
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from faults import FaultyStore
from sessiond.storage import logrun as logrun_mod
from sessiond.storage.logrun import read_run
from sessiond.storage.model import LogRun, Op, RemoteLog, text_head
from sessiond.storage.schema import MIGRATIONS
from sessiond.stores import FileStore, StoreError
from sessiond.stores.registry import RegistryEntry
from sessiond.sync import dagcbor
from sessiond.sync import pagecut as pagecut_mod
from sessiond.sync import pages as pages_mod
from sessiond.sync import push as push_mod
from sessiond.sync.checkpoint import (
    ProofError,
    check_proofs,
    conversation_hash,
    conversation_hashes,
    make_proof,
    prepare,
)
from sessiond.sync.crypto import seal
from sessiond.sync.pages import PAGE_MAX, Entry, LogError, op_to_cbor, parse_page
from sessiond.sync.pull import LogReader
from sessiond.sync.push import LogWriter
from sessiond.sync.workers import Workers, shared
from waiting import eventually

SID, DEV = "sess", "dev0"

texts = st.text(max_size=40) | st.text(alphabet="ab\u00e9\u4e2d\U0001f600", min_size=0, max_size=3000)
message = st.tuples(
    st.sampled_from(["main", "side", "\u00e9t\u00e9"]),
    st.sampled_from(["user", "assistant"]),
    texts,
    st.none() | st.integers(0, 1 << 40),
    st.none()
    | st.dictionaries(st.text(max_size=5), st.integers(-(1 << 63), (1 << 63) - 1) | st.text(max_size=5), max_size=3),
)
other = st.tuples(
    st.sampled_from(["chat.create", "session.update", "checkpoint.add", "future.kind"]),
    st.dictionaries(
        st.text(max_size=5), st.integers(-(1 << 63), (1 << 63) - 1) | st.text(max_size=5) | st.none(), max_size=3
    ),
)


def records(items: list, first: int = 1) -> list[tuple]:
    """Database.log_records tuples for a run of messages and other operations."""
    out = []
    for i, item in enumerate(items):
        seq, t = first + i, 1700000000 + i / 1000
        if len(item) == 5:
            chat, role, content, tokens, extra = item
            out.append(
                (
                    seq,
                    seq * 2,
                    "message.add",
                    None,
                    t,
                    chat,
                    role,
                    content,
                    tokens,
                    json.dumps(extra) if extra is not None else None,
                )
            )
        else:
            kind, body = item
            out.append((seq, seq * 2, kind, json.dumps(body), t, None, None, None, None, None))
    return out


def expected_ops(recs: list[tuple]) -> list[Op]:
    ops = []
    for seq, lam, kind, body, t, chat, role, content, tokens, extra in recs:
        if body is None:
            e = json.loads(extra) if extra else None
            body = {"chat": chat, "role": role, "content": content, "tokens": tokens, "extra": e or None}
        else:
            body = json.loads(body)
        ops.append(Op(SID, DEV, seq, lam, kind, body, round(t * 1000) / 1000))
    return ops


def read_back(pages: list[tuple[bytes, int, int]], after: int = 0) -> tuple[list[Op], RemoteLog]:
    ops, log = [], RemoteLog(DEV, [], [], after)
    for plain, first, last in pages:
        if last <= after:
            continue
        page = parse_page(plain, Entry(first, last, len(plain), False, seal(plain, bytes(32))[1]), SID, DEV)
        ops += page.ops(SID, DEV, max(0, after + 1 - first))
        page.into(log, SID, DEV, max(0, after + 1 - first))
    return ops, log


@settings(max_examples=60, deadline=None)
@given(st.lists(message | other, min_size=1, max_size=40), st.integers(0, 45))
def test_pages_round_trip(items, after):
    recs = records(items)
    pages = LogWriter(SID, DEV, bytes(32), None).pages(LogRun.from_records(recs))
    assert pages[0][1] == 1 and pages[-1][2] == len(recs)
    for (_, _, last), (_, first, _) in itertools.pairwise(pages):
        assert first == last + 1
    assert all(dagcbor.encode(dagcbor.decode(p)) == p for p, _, _ in pages)  # canonical DAG-CBOR, byte for byte
    ops, log = read_back(pages, after)
    want = [o for o in expected_ops(recs) if o.seq > after]
    # what verify compares: the canonical map of every operation
    assert [dagcbor.encode(op_to_cbor(o)) for o in ops] == [dagcbor.encode(op_to_cbor(o)) for o in want]
    # what the import inserts: message rows plus the other operations
    rows = [
        (SID, o.body["chat"], DEV, o.seq, o.lamport, o.body["role"], o.body["content"], o.body["tokens"], o.created_at)
        for o in want
        if o.kind == "message.add"
    ]
    assert [r[:9] for r in log.messages] == rows
    assert [json.loads(r[9]) if r[9] else None for r in log.messages] == [
        dagcbor.canon(o.body["extra"]) if o.body["extra"] else None for o in want if o.kind == "message.add"
    ]
    assert log.ops == [o for o in want if o.kind != "message.add"]


def test_pages_stay_under_the_limit():
    big = "x" * 200_000
    wide = "\u4e2d" * 70_000  # three bytes each in UTF-8
    items = (
        [("main", "user", big, 1, None)] * 5
        + [("main", "user", wide, None, None)] * 5
        + [("main", "user", "short", None, {"k": "v"})] * 3000
    )
    recs = records(items)
    pages = LogWriter(SID, DEV, bytes(32), None).pages(LogRun.from_records(recs))
    assert all(len(p) <= PAGE_MAX for p, _, _ in pages)
    assert len(pages) < 20  # and not needlessly small
    ops, _ = read_back(pages)
    assert len(ops) == len(recs)
    big = LogRun.from_records(records([("main", "user", "y" * 600_000, None, None)]))
    one = LogWriter(SID, DEV, bytes(32), None).pages(big)
    assert len(one) == 1  # an operation larger than a page is a page of its own


def test_pages_refuse_a_torn_run():
    recs = records([("main", "user", "a", None, None)] * 3)
    with pytest.raises(LogError, match="consecutive"):
        LogWriter(SID, DEV, bytes(32), None).pages(LogRun.from_records([recs[0], recs[2]]))


def _page_map(**change) -> bytes:
    m = {
        "b": [None, None],
        "c": ["main", "main"],
        "d": DEV,
        "f": 1,
        "k": ["message.add"] * 2,
        "l": [1, 2],
        "n": [None, 3],
        "r": ["user", "user"],
        "s": SID,
        "t": [1, 2],
        "v": 2,
        "x": ["a", "b"],
        "ty": "sessiond/page",
    }
    m.update(change)
    return dagcbor.encode({k: v for k, v in m.items() if v is not ...})


@pytest.mark.parametrize(
    "change, why",
    [
        ({"v": 1}, "version"),
        ({"f": 2}, "does not hold seqs"),
        ({"l": [1]}, "wrong length"),
        ({"x": ...}, "wrong length"),
        ({"k": ["message.add", 7]}, "kind is not text"),
        ({"l": [1, "2"]}, "not an integer"),
        ({"t": [1, 2.5]}, "not an integer"),
        ({"n": [None, "3"]}, "wrong type"),
        ({"b": [None, [1]]}, "wrong type"),
        ({"x": ["a", None]}, "content is missing"),
        (
            {
                "k": ["chat.create", "message.add"],
                "b": [{}, None],
                "c": [None, "main"],
                "r": [None, "user"],
                "x": ["a", None],
                "n": [None, None],
            },
            "1 \\(chat.create\\) has message fields",
        ),
        (
            {
                "k": ["chat.create", "message.add"],
                "b": [{}, None],
                "c": [None, "main"],
                "r": [None, "user"],
                "x": [None, "b"],
                "n": [3, None],
            },
            "1 \\(chat.create\\) has message fields",
        ),
        ({"c": ["main", 5]}, "chat id is missing"),
        ({"k": ["message.add", "chat.create"]}, "operation that is not a message has one"),
        (
            {
                "k": ["message.add", "chat.create"],
                "c": ["main", None],
                "r": ["user", None],
                "x": ["a", None],
                "n": [None, None],
            },
            "2 \\(chat.create\\) has no body",
        ),
        ({"s": "other"}, "swapped"),
        ({"d": "other"}, "swapped"),
        ({"ty": "sessiond/node"}, "not a page"),
    ],
)
def test_malformed_pages_are_refused(change, why):
    plain = _page_map(**change)
    with pytest.raises(LogError, match=why):
        parse_page(plain, Entry(1, 2, len(plain), False, seal(plain, bytes(32))[1]), SID, DEV)


# ------------------------------------------------------------------ checkpoints in one pass
@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("ABC"), st.integers(0, 5)), max_size=60),
    st.lists(st.dictionaries(st.sampled_from("ABCD"), st.integers(0, 25), max_size=4), max_size=8),
)
def test_conversation_hashes_match_one_by_one(stream, frontiers):
    # messages of three devices in a global order; each device's seqs increase along it
    seqs = {"A": 0, "B": 0, "C": 0}
    msgs = []
    for device, tok in stream:
        seqs[device] += 1
        msgs.append((device, seqs[device], "main", "user", f"{device}{seqs[device]}", tok))
    prepared = prepare(msgs)
    assert conversation_hashes(prepared, frontiers) == [conversation_hash(prepared, f) for f in frontiers]


def test_check_proofs_names_the_checkpoint_that_does_not_hold():
    key = SigningKey(bytes(32))
    pks = {b"\xed" + bytes(key.verify_key)}
    msgs = prepare([("A", i, "main", "user", f"m{i}", 1) for i in range(1, 101)])
    proofs = [make_proof(SID, "A", n, msgs, {"A": n * 10}, 1.0, key, version=1) for n in range(1, 11)]
    check_proofs(proofs, msgs, pks)
    changed = prepare([("A", i, "main", "user", f"m{i}" if i != 55 else "changed", 1) for i in range(1, 101)])
    with pytest.raises(ProofError, match="checkpoint 6 of device A"):
        check_proofs(proofs, changed, pks)
    with pytest.raises(ProofError, match="does not know"):
        check_proofs(proofs, msgs, set())


def test_prepare_rows_matches_prepare():
    rows = [("s", "main", "dev", i, i * 2, "user", f"m{i} \u00e9", i % 3 or None, 1.0, None) for i in range(1, 50)]
    from sessiond.sync.checkpoint import prepare_rows

    assert prepare_rows(rows) == prepare([(r[2], r[3], r[1], r[5], r[6], r[7]) for r in rows])
    # version 2, whose items hold a message's name and tool calls (its other extra fields left out), and a
    # chain carried on (extend, from the database's rows) that is the same as from the prepared items
    import json

    from sessiond.sync.checkpoint import Chain, conversation_hash, extend

    calls = {"tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    extras = [None, json.dumps({"name": "al", "metadata": {"x": 1}}), json.dumps(calls), json.dumps({"usage": {}})]
    rows = [r[:9] + (extras[i % 4],) for i, r in enumerate(rows)]
    two = prepare_rows(rows, 2)
    assert two == prepare([(r[2], r[3], r[1], r[5], r[6], r[7], r[9]) for r in rows], 2)
    assert b"name" in two[1][2] and b"metadata" not in two[1][2] and b"tool_calls" in two[2][2]
    assert two[3][2].endswith(b"\xa0") and b"usage" not in two[3][2]  # fields it does not hash: an empty map
    frontier = {"dev": 49}
    h, n, tokens = conversation_hash(two, frontier)
    chain = extend(None, frontier, [(r[4], r[2], r[3], r[1], r[5], r[6], r[7] or 0, r[9]) for r in rows])
    assert chain == Chain(frontier, h, n, tokens, (rows[-1][4], "dev", 49))


def test_entries_of_an_unknown_kind_are_refused():
    e = Entry(1, 2, 10, False, seal(b"x", bytes(32))[1], True)
    m = e.to_cbor()
    assert m["k"] == 2 and Entry.from_cbor(m) == e
    for bad in (3, -1, True, "1"):
        with pytest.raises(LogError, match="malformed entry"):
            Entry.from_cbor({**m, "k": bad})


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(message | other, st.floats(0, 4e9, allow_nan=False)), min_size=0, max_size=30),
    st.integers(0, 5),
    st.integers(0, 40),
    st.booleans(),
)
def test_log_run_reads_back_what_was_written(items, after, span, small_limit):
    """Database.log_run (one statement, columns concatenated by SQLite) gives the same run as the
    rows themselves: every double exact, every content byte in place (NULs too), operations in seq
    order, and only this log's; also when the contents exceed SQLite's largest value (here made
    small), and it reads the range in parts."""
    conn = sqlite3.connect(":memory:")
    if small_limit:
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 20_000)  # every single message here fits
    for migration in MIGRATIONS:
        conn.executescript(migration)
    recs = []
    for (seq, lam, kind, body, _, chat, role, content, tokens, extra), (_, t) in zip(
        records([i for i, _ in items]), items
    ):
        if content is not None and seq % 3 == 0:
            content += "\0"
        recs.append((seq, lam, kind, body, t, chat, role, content, tokens, extra))
        if body is None:
            conn.execute(
                "INSERT INTO messages(session_id, chat_id, device_id, seq, lamport, role, content, tokens,"
                " created_at, extra) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (SID, chat, DEV, seq, lam, role, content, tokens, t, extra),
            )
        else:
            conn.execute(
                "INSERT INTO ops(session_id, device_id, seq, lamport, kind, body, created_at) VALUES (?,?,?,?,?,?,?)",
                (SID, DEV, seq, lam, kind, body, t),
            )
    conn.execute(
        "INSERT INTO messages(session_id, chat_id, device_id, seq, lamport, role, content, created_at)"
        " VALUES (?, 'main', 'another device', 1, 1, 'user', 'not this log', 0)",
        (SID,),
    )
    wanted = [r for r in recs if after < r[0] <= after + span]
    got = read_run(conn, SID, DEV, after, after + span)
    want = LogRun.from_records(wanted)
    for name in ("seqs", "lams", "kinds", "bodies", "times", "chats", "roles", "toks", "extras", "sizes", "blob"):
        assert getattr(got, name) == getattr(want, name), name
    utf8 = [r[7].encode() if r[7] is not None else b"" for r in wanted]
    assert [bytes(p) for p in got.pieces()] == utf8
    for cut in (0, 1, len(wanted) // 2, len(wanted)):  # how a push carries a page over to the next chunk
        again = got.tail(cut) + got
        assert again.seqs == got.seqs[cut:] + got.seqs and [bytes(p) for p in again.pieces()] == utf8[cut:] + utf8


def test_log_run_rounds_times_as_python_does():
    """The run's times are rounded to milliseconds by SQLite, exactly as round(created_at * 1000) in
    Python: ties to even (SQLite's own round() takes them away from zero), the smallest fractions and
    the largest times it rounds itself; and a run with times it leaves to Python (negative, or too large
    for its arithmetic: read again as floats)."""
    conn = sqlite3.connect(":memory:")
    for migration in MIGRATIONS:
        conn.executescript(migration)
    ties = [0.0625, 0.1875, -0.0625, -0.1875, 1700000000.0625, 1700000000.1875, 0.0005, 0.0015]
    near = [0.0004999999999999999, 0.00050000000000000001, -0.0004999999999999999, 5e-324, -0.0, 0.0]
    rng = __import__("random").Random(7)
    times = ties + near + [rng.uniform(-4e9, 4e9) for _ in range(200)] + [1700000000 + rng.random() for _ in range(200)]
    assert any((t * 1000) % 1 == 0.5 and round(t * 1000) % 2 == 0 for t in ties)  # a tie SQLite would round up
    # every time the statement rounds itself (none before 1970, none past its bound of 4.5e12 s), then the
    # ones it leaves to Python: negative, huge
    big_ties = [t for k in (2**40, 2**40 + 1, 2**50, 2**50 + 1, 2**51 + 1) if (t := (k + 0.5) / 1000) * 1000 % 1 == 0.5]
    assert len(big_ties) >= 4
    since_1970 = [t for t in times if t >= 0] + big_ties + [4.5e12, 4.5e12 - 0.0005, 4.5e12 - 0.00025]
    since_1970 += [rng.uniform(0, 4.5e12) for _ in range(200)]
    # 4503599627370.497 s is 2^52 + 1 ms, odd: past 2^52 adding 0.5 rounds, and the statement would get it wrong
    for more in (since_1970, since_1970 + [4503599627370.497], times, times + [1e16, -3e17]):
        conn.execute("DELETE FROM messages")
        for seq, t in enumerate(more, 1):
            conn.execute(
                "INSERT INTO messages(session_id, chat_id, device_id, seq, lamport, role, content, created_at)"
                " VALUES (?, 'main', ?, ?, ?, 'user', 'x', ?)",
                (SID, DEV, seq, seq, t),
            )
        if more is since_1970:
            (by_sql,) = conn.execute(f"SELECT json_group_array({logrun_mod._MS}) FROM messages").fetchone()
            assert json.loads(by_sql) == [round(t * 1000) for t in more]
        got = read_run(conn, SID, DEV, 0, 1 << 62)
        assert got.times == [round(t * 1000) for t in more]


def _small_pages(monkeypatch, size: int) -> None:
    """Pages of at most `size` bytes: the cut (pages.py) and the writer's parts and merges (push.py)."""
    monkeypatch.setattr(pages_mod, "PAGE_MAX", size)
    monkeypatch.setattr(pagecut_mod, "PAGE_MAX", size)
    monkeypatch.setattr(push_mod, "PAGE_MAX", size)


async def test_a_long_run_is_written_in_chunks_and_reads_back(tmp_path, monkeypatch):
    """write_run reads a chunk at a time and leaves each chunk's last page for the next read: every
    operation is stored once, in order, whatever the chunk and page boundaries."""
    monkeypatch.setattr(push_mod, "STREAM_BYTES", 40_000)  # chunks of ~1024 operations
    _small_pages(monkeypatch, 20_000)
    items = []
    for i in range(15000):
        if i % 997 == 5:
            items.append(("checkpoint.add", {"at": i}))
        else:
            items.append(
                (
                    "main",
                    "user" if i % 2 else "assistant",
                    f"{i} " + "w\u00e9" * (i % 50 if i % 1500 else 9000),
                    i,
                    {"k": i} if i % 301 == 0 else None,
                )
            )
    recs = records(items)
    run = LogRun.from_records(recs)
    loads, readers = [], []

    async def load(a, b):  # a short run only
        raise AssertionError("a long run is read by the workers")

    @contextlib.contextmanager
    def open_loader():
        readers.append(threading.get_ident())

        def read(a, b):
            loads.append((a, b))
            return LogRun.from_records(recs[a - 1 : b])

        yield read

    for store in (FileStore(str(tmp_path / "store")), FaultyStore(FileStore(str(tmp_path / "store2")))):
        loads.clear()
        writer = LogWriter(SID, DEV, bytes(range(32)), store)
        entries, lamport = await writer.write_run(load, open_loader, 1, len(recs))
        assert lamport == max(run.lams) and len(loads) > 3  # several chunks
        spans = sorted(loads)  # every operation read once
        assert [a for a, _ in spans] == [1] + [b + 1 for _, b in spans[:-1]] and spans[-1][1] == len(recs)
        assert [e.first for e in entries] == [1] + [e.last + 1 for e in entries[:-1]] and entries[-1].last == len(recs)
        root = getattr(store, "inner", store).root
        files = [f for _, _, fs in os.walk(os.path.join(root, "objects")) for f in fs]
        # some pages are in parts; parts that repeat are the same object (same plaintext, same key)
        assert writer.written.objects >= len(files) > len(entries)
        assert writer.written.bytes >= sum(
            os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(root, "objects")) for f in fs
        )
        ops = await LogReader(SID, DEV, store).ops(entries)
        assert [dagcbor.encode(op_to_cbor(o)) for o in ops] == [
            dagcbor.encode(op_to_cbor(o)) for o in expected_ops(recs)
        ]
        # pages stay full across chunk edges (a chunk's last page goes round with the next chunk)
        assert all(e.size <= pages_mod.PAGE_MAX or e.parts for e in entries)
        assert len(entries) <= len(writer.pages(run)) + 2
    assert len(set(readers)) > 1  # read by several threads at once, each on its own reader


def _long_run(n: int = 6000) -> list[tuple]:
    return records([("main", "user", f"{i} " + "words " * 60, None, None) for i in range(n)])


def _loader(recs, fail_at: int | None = None, delay: float = 0.0):
    @contextlib.contextmanager
    def open_loader():
        def read(a, b):
            time.sleep(delay)  # the scenario, not a wait: a slow source, so that a run is still going
            if fail_at is not None and a <= fail_at <= b:
                raise RuntimeError(f"cannot read {a}..{b} (injected)")
            return LogRun.from_records(recs[a - 1 : b])

        yield read

    return open_loader


def _counted(open_loader, reads: list):
    """open_loader, recording each range read (from a worker thread) in `reads`."""

    @contextlib.contextmanager
    def counted():
        with open_loader() as read:

            def read_counted(a, b):
                reads.append((a, b))
                return read(a, b)

            yield read_counted

    return counted


async def _no_short(a, b):
    raise AssertionError("a long run is read by the workers")


async def _workers_idle(workers: Workers | None = None) -> None:
    """The push's worker pool runs a new job at once: no worker of an earlier push is still busy
    (`workers`: those the writers were given; by default the shared ones of a writer given none)."""
    workers = workers or shared()
    t = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(*(asyncio.wrap_future(workers.push.submit(time.sleep, 0)) for _ in range(workers.push_threads))),
        2,
    )
    assert time.monotonic() - t < 1


async def test_a_long_run_that_cannot_be_read_fails_with_the_reason(tmp_path, monkeypatch):
    """A worker that fails stops the others; the push fails with that error and nothing is left running."""
    monkeypatch.setattr(push_mod, "STREAM_BYTES", 40_000)
    recs = _long_run()
    writer = LogWriter(SID, DEV, bytes(range(32)), FileStore(str(tmp_path / "store")))
    with pytest.raises(RuntimeError, match="cannot read"):
        await writer.write_run(_no_short, _loader(recs, fail_at=4000), 1, len(recs))
    await _workers_idle()


class _StuckFileStore(FileStore):
    """A file store whose own writer threads fail or hang (a full disk, a network folder that hangs)."""

    def __init__(self, root):
        super().__init__(root)
        self.mode: str | None = None
        self.release = threading.Event()

    def _put_sync(self, data, h=None):
        if self.mode == "down":
            raise OSError(28, "No space left on device")
        if self.mode == "hang":
            self.release.wait(30)
        return super()._put_sync(data, h)


@pytest.mark.parametrize(
    "kind, failure",
    [("through the event loop", (StoreError, "down")), ("on the store's threads", (OSError, "No space"))],
)
async def test_a_long_run_to_a_failing_store_fails_and_to_a_hanging_one_times_out(tmp_path, monkeypatch, kind, failure):
    """A failing store fails the push with its error, a hung one within the writer's timeout; once the
    store is back the same run goes through. Both ways a push writes: a store written through the
    event loop (FaultyStore) and one with writer threads of its own (FileStore.put_in_background)."""
    monkeypatch.setattr(push_mod, "STREAM_BYTES", 40_000)
    _small_pages(monkeypatch, 20_000)
    recs = _long_run()
    if kind == "through the event loop":
        store = FaultyStore(FileStore(str(tmp_path / "store")))
    else:
        store = _StuckFileStore(str(tmp_path / "store"))
    store.mode = "down"
    with pytest.raises(failure[0], match=failure[1]):
        await LogWriter(SID, DEV, bytes(range(32)), store).write_run(_no_short, _loader(recs), 1, len(recs))
    await _workers_idle()
    store.mode = "hang"
    t = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await LogWriter(SID, DEV, bytes(range(32)), store, timeout=0.3).write_run(
            _no_short, _loader(recs), 1, len(recs)
        )
    assert time.monotonic() - t < 5
    await _workers_idle()
    store.mode = None  # the store is back: the same run goes through
    getattr(store, "release", threading.Event()).set()  # and writes that hung end
    writer = LogWriter(SID, DEV, bytes(range(32)), store)
    entries, _ = await writer.write_run(_no_short, _loader(recs), 1, len(recs))
    assert writer.written.objects >= len(entries) > 3
    ops = await LogReader(SID, DEV, store).ops(entries)
    assert [o.seq for o in ops] == list(range(1, len(recs) + 1))


async def test_a_cancelled_long_run_winds_its_workers_down(tmp_path, monkeypatch):
    monkeypatch.setattr(push_mod, "STREAM_BYTES", 40_000)
    recs = _long_run()
    writer = LogWriter(SID, DEV, bytes(range(32)), FileStore(str(tmp_path / "store")))
    reads: list[tuple[int, int]] = []
    task = asyncio.ensure_future(writer.write_run(_no_short, _counted(_loader(recs, delay=0.05), reads), 1, len(recs)))
    await eventually(lambda: reads)  # the workers are reading the run
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _workers_idle()  # they stopped at their next step instead of reading the rest of the run


async def test_the_collector_is_paused_only_while_long_runs_are_written(tmp_path, monkeypatch):
    """write_run turns Python's cyclic collector off for a long run and back on after it, whether the
    run succeeds, fails or is cancelled; several at once turn it back on when the last ends; and it
    stays off if it was off before."""
    monkeypatch.setattr(push_mod, "STREAM_BYTES", 40_000)
    recs = _long_run()
    seen: list[bool] = []

    def watched(**kw):
        inner = _loader(recs, **kw)

        @contextlib.contextmanager
        def open_loader():
            with inner() as read:

                def read_watched(a, b):
                    seen.append(gc.isenabled())
                    return read(a, b)

                yield read_watched

        return open_loader

    assert gc.isenabled()
    writer = LogWriter(SID, DEV, bytes(range(32)), FileStore(str(tmp_path / "store")))
    await writer.write_run(_no_short, watched(), 1, len(recs))
    assert len(seen) > 3 and not any(seen) and gc.isenabled()
    seen.clear()
    with pytest.raises(RuntimeError, match="cannot read"):
        await writer.write_run(_no_short, watched(fail_at=4000), 1, len(recs))
    assert seen and not any(seen) and gc.isenabled()
    seen.clear()
    task = asyncio.ensure_future(writer.write_run(_no_short, watched(delay=0.05), 1, len(recs)))
    await eventually(lambda: seen)  # the workers are reading the run
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _workers_idle()
    assert gc.isenabled()
    with writer.workers.gc_paused():  # two at once: on again only when the last ends
        with writer.workers.gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:  # off before: left off
        await writer.write_run(_no_short, watched(), 1, len(recs))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_file_store_drops_each_object_from_the_page_cache_once_it_is_on_disk(tmp_path, monkeypatch):
    """An object is fsynced before its pages are dropped (DONTNEED drops clean pages only, so in the
    other order they would stay), and reads back whole. Keys and heads stay cached."""
    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise on this system")
    calls: list[tuple] = []
    real_fsync, real_fadvise = os.fsync, os.posix_fadvise
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(("fsync", fd)), real_fsync(fd))[1])
    monkeypatch.setattr(
        os,
        "posix_fadvise",
        lambda fd, off, n, advice: (calls.append(("fadvise", fd, advice)), real_fadvise(fd, off, n, advice))[1],
    )
    store = FileStore(str(tmp_path / "store"))
    data = os.urandom(300_000)
    h = store.put_in_background(data).result(10)
    drops = [c for c in calls if c[0] == "fadvise"]
    assert len(drops) == 1 and drops[0][2] == os.POSIX_FADV_DONTNEED
    assert calls.index(("fsync", drops[0][1])) < calls.index(drops[0])  # the file's own fsync came first
    assert store._get_sync(h) == data
    calls.clear()
    asyncio.run(store.set_head(RegistryEntry.create(SigningKey(bytes(32)), 1, b"\x1e" + bytes(32))))
    assert not [c for c in calls if c[0] == "fadvise"]


async def test_workers_and_store_threads_belong_to_their_owner(tmp_path, monkeypatch):
    """A writer given Workers pushes on their threads, none of them started before use; close() ends
    them and later use is refused. A FileStore's writer threads start with its first write, its reader
    thread with its first read, and they end with close()."""
    monkeypatch.setattr(push_mod, "STREAM_BYTES", 40_000)
    recs = _long_run()
    before = set(threading.enumerate())  # threads, not names: the shared Workers' threads have the same names
    workers = Workers(push_threads=2)
    store = FileStore(str(tmp_path / "store"))
    assert not set(threading.enumerate()) - before  # nothing started yet
    writer = LogWriter(SID, DEV, bytes(range(32)), store, workers=workers)
    entries, _ = await writer.write_run(_no_short, _loader(recs), 1, len(recs))
    assert [o.seq for o in await LogReader(SID, DEV, store).ops(entries)] == list(range(1, len(recs) + 1))
    ours = [
        t
        for t in set(threading.enumerate()) - before
        if t.name.startswith(("sessiond-push", "sessiond-seal", "sessiond-store"))
    ]
    assert {t.name.split("_")[0] for t in ours} == {"sessiond-push", "sessiond-store", "sessiond-store-read"}
    await asyncio.to_thread(workers.close)
    await store.close()
    assert not [t for t in ours if t.is_alive()]
    with pytest.raises(RuntimeError, match="closed"):
        await LogWriter(SID, DEV, bytes(range(32)), store, workers=workers).write_run(
            _no_short, _loader(recs), 1, len(recs)
        )
    assert gc.isenabled()


def test_offsets_of_heads_tails_and_joins_of_runs_of_one_head_width_and_of_several():
    """A run keeps the width of its content heads (found once) through its heads, tails and joins; a
    join of runs of two widths, or with an operation that is not a message, is measured again."""

    def run_of(sizes: list[int], first: int = 1) -> LogRun:
        return LogRun.from_records(
            [
                (first + i, first + i, "message.add", None, 1.0, "main", "user", "x" * n, None, None)
                if n >= 0
                else (first + i, first + i, "chat.create", "{}", 1.0, None, None, None, None, None)
                for i, n in enumerate(sizes)
            ]
        )

    two, three, mixed = run_of([30, 200, 255, 24]), run_of([256, 300, 65535], 5), run_of([5, -1, 300], 8)
    for run in (two, three, mixed, two + three, two.tail(1) + three.head(2), two + three + mixed, mixed.tail(1)):
        fresh = LogRun(*(list(c) for c in run._columns()), bytes(run.blob))  # type: ignore[call-arg]
        every = list(range(len(run) + 1))
        assert (
            run.offsets_at(every)
            == fresh.offsets()
            == list(itertools.accumulate((len(text_head(n)) + n if n >= 0 else 0 for n in run.sizes), initial=0))
        )
    assert (two.head_width(), three.head_width(), mixed.head_width()) == (2, 3, 0)
    assert (two + three).head_width() == 0 and two.tail(2).head_width() == 2 and (two + two).head_width() == 2
