"""Full-text search over 100,000 messages: the latency of `GET /v1/search` against a real daemon, of the
storage layer's search alone, and the floor: the same ranking (bm25) and snippet SQL run directly through
the sqlite3 module on the same database file (`floor_ms`). Prints JSON.

Target (issue 18, this 2-core machine): 100,000 messages searched in <= 50 ms (the median over the
queries below, each the median of its runs).

The messages are chat-sized (10-80 words, about 300 characters) of a made-up vocabulary whose word
frequencies follow Zipf's law as natural language does, spread over 100 sessions; they are written in
one transaction straight into the messages table (storage/search.py's insert_messages, as the append and
import paths write), whose triggers list them for the index as any write does; the index then catches up
with them (`index_seconds`) before the first query. The queries span rare to very common
words, a phrase, a prefix, AND, OR and NOT, with and without a filter.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from _util import Daemon, remove

from sessiond.client import Client
from sessiond.storage.database import Database
from sessiond.storage.search import insert_messages

MESSAGES = int(os.environ.get("BENCH_MESSAGES", 100_000))
SESSIONS = int(os.environ.get("BENCH_SESSIONS", 100))
RUNS = int(os.environ.get("BENCH_RUNS", 7))
VOCABULARY = 20_000
TARGET_MS = 50.0


def vocabulary(rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))))
    ordered = sorted(words)  # a set's order changes with the hash seed: sort, then shuffle with the seed
    rng.shuffle(ordered)
    return ordered


def queries(vocab: list[str], sample: str, sid: str) -> list[tuple[str, dict]]:
    """(query, filters): words by frequency rank (0 is the most common), a phrase taken from a message,
    a prefix, boolean forms, and filters."""
    w = vocab
    phrase = " ".join(sample.split()[2:4])
    return [
        (w[0], {}),  # in most messages: the worst case, every match ranked
        (w[20], {}),
        (w[200], {}),
        (w[2000], {}),
        (w[15000], {}),  # rare
        (f'"{phrase}"', {}),
        (w[300][:3] + "*", {}),
        (f"{w[100]} AND {w[150]}", {}),
        (f"{w[500]} OR {w[600]}", {}),
        (f"{w[50]} NOT {w[0]}", {}),
        (w[100], {"role": "assistant"}),
        (w[100], {"session": sid}),
    ]


async def build(path: str, rng: random.Random, vocab: list[str]) -> tuple[list[str], str, float]:
    db = await Database.open(path)
    try:
        sids = [(await db.create_session({"name": f"bench {i}", "user": f"u{i % 5}"}))["id"] for i in range(SESSIONS)]
        cum = list(itertools.accumulate(1 / (r + 1) for r in range(VOCABULARY)))
        rows = []
        for i in range(MESSAGES):
            text = " ".join(rng.choices(vocab, cum_weights=cum, k=rng.randint(10, 80)))
            rows.append(
                (
                    sids[i % SESSIONS],
                    "main",
                    db.device_id,
                    1000 + i,
                    1000 + i,
                    ("user", "assistant")[i % 2],
                    text,
                    70,
                    1.7e9,
                    None,
                )
            )
        t = time.perf_counter()
        async with db.c.transaction() as tx:
            await insert_messages(tx, rows)
        return sids, rows[0][6], time.perf_counter() - t
    finally:
        await db.close()


async def in_process(path: str, qs: list[tuple[str, dict]]) -> tuple[dict[str, tuple[float, int]], float]:
    """Each query's median time and hits through the storage layer; and the seconds the index took to
    catch up with the messages written, done first (a search would do it, inside the first run's time)."""
    db = await Database.open(path)
    try:
        t = time.perf_counter()
        await db.searcher.catch_up()
        index_s = time.perf_counter() - t
        out = {}
        for q, f in qs:
            times = []
            for _ in range(RUNS):
                t = time.perf_counter()
                hits = await db.search(q, **f)
                times.append((time.perf_counter() - t) * 1000)
            out[q + (f" {f}" if f else "")] = (statistics.median(times), len(hits))
        return out, index_s
    finally:
        await db.close()


# The two statements storage/search.py runs for a search (the ranking, then the snippets of the hits kept),
# as text here: the floor runs them with the sqlite3 module alone, no sessiond code between
RANK_SQL = (
    "SELECT messages_fts.rowid, messages_fts.rank FROM messages_fts"
    " JOIN messages m ON m.rowid=messages_fts.rowid JOIN sessions s ON s.id=m.session_id"
    " WHERE {where} ORDER BY messages_fts.rank LIMIT 20"
)
SNIPPET_SQL = (
    "SELECT messages_fts.rowid, snippet(messages_fts, -1, '\ue000', '\ue001', '…', 16),"
    " m.session_id, m.chat_id, m.device_id, m.seq, m.lamport, m.role, m.created_at, c.compacted"
    " FROM messages_fts JOIN messages m ON m.rowid=messages_fts.rowid"
    " LEFT JOIN chats c ON c.session_id=m.session_id AND c.id=m.chat_id"
    " WHERE messages_fts MATCH ? AND messages_fts.rowid IN ({marks})"
)


def floor(path: str, qs: list[tuple[str, dict]]) -> dict[str, float]:
    """The floor of each query (ms, the median of RUNS): the same ranking (bm25) and snippet statements on
    the same database file, run directly through the sqlite3 module on a read-only connection."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    columns = {"session": "m.session_id", "user": "s.user", "role": "m.role"}
    try:
        out = {}
        for q, f in qs:
            where = " AND ".join(["messages_fts MATCH ?", "NOT s.importing", *(f"{columns[k]}=?" for k in f)])
            times = []
            for _ in range(RUNS):
                t = time.perf_counter()
                ranked = conn.execute(RANK_SQL.format(where=where), (q, *f.values())).fetchall()
                if ranked:
                    marks = ",".join("?" * len(ranked))
                    conn.execute(SNIPPET_SQL.format(marks=marks), (q, *(r[0] for r in ranked))).fetchall()
                times.append((time.perf_counter() - t) * 1000)
            out[q + (f" {f}" if f else "")] = statistics.median(times)
        return out
    finally:
        conn.close()


def match_counts(path: str, qs: list[str]) -> list[int]:
    """How many messages each query matches (for the report), on a read-only connection of its own."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [
            conn.execute("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?", (q,)).fetchone()[0] for q in qs
        ]
    finally:
        conn.close()


def built_home() -> tuple[str, str, list[str], list[str], str, float]:
    """A private home in a new temporary folder with the bench's database built in it (build): its path,
    the database's, the vocabulary, the session ids, a message's text and the insert's seconds."""
    rng = random.Random(18)
    vocab = vocabulary(rng)
    home = os.path.join(tempfile.mkdtemp(prefix="sd-bench-"), "home")
    os.makedirs(home, mode=0o700)
    path = os.path.join(home, "sessions.db")
    sids, sample, insert_s = asyncio.run(build(path, rng, vocab))
    return home, path, vocab, sids, sample, insert_s


def main() -> None:
    home, path, vocab, sids, sample, insert_s = built_home()
    qs = queries(vocab, sample, sids[0])
    storage, index_s = asyncio.run(in_process(path, qs))
    floors = floor(path, qs)
    socket = {}
    with Daemon(home=home) as d, Client(d.home) as c:
        c.search(vocab[1])  # warm up
        for q, f in qs:
            times = []
            for _ in range(RUNS):
                t = time.perf_counter()
                res = c.search(q, **f)
                times.append((time.perf_counter() - t) * 1000)
            socket[q + (f" {f}" if f else "")] = (statistics.median(times), len(res["hits"]))
    counts = match_counts(path, [q for q, _ in qs])
    per_query = [
        {
            "query": name,
            "matching_messages": n,  # before any filter
            "socket_ms": round(socket[name][0], 2),
            "storage_ms": round(storage[name][0], 2),
            "floor_ms": round(floors[name], 2),
            "hits": socket[name][1],
        }
        for name, n in zip(socket, counts)
    ]
    remove(os.path.dirname(home))
    median = statistics.median(p["socket_ms"] for p in per_query)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/search.py",
        "messages": MESSAGES,
        "sessions": SESSIONS,
        "runs_per_query": RUNS,
        # the one transaction writing the messages (their triggers list them for the index), then the
        # index catching up with them (storage/search.py catch_up)
        "insert_seconds": round(insert_s, 2),
        "index_seconds": round(index_s, 2),
        "median_ms": round(median, 2),
        "storage_median_ms": round(statistics.median(p["storage_ms"] for p in per_query), 2),
        "floor_median_ms": round(statistics.median(p["floor_ms"] for p in per_query), 2),
        "worst_ms": max(p["socket_ms"] for p in per_query),
        "target_ms": TARGET_MS,
        "ok": median <= TARGET_MS,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "queries": per_query,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
