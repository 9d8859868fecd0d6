"""Import by share code, and propagation between two daemons. Prints JSON.

* the time to import a 100,000-message session by share code (daemon B, over its socket), beside the
  raw limit measured in the same run: fetch + BLAKE3 + decrypt + decode + one batched SQLite insert of
  the same data, without any of sessiond's checks or bookkeeping;
* the delay from an append acknowledged by daemon A to its visibility on daemon B, default settings.

Targets (issue 4): import <= 2x the raw limit and <= 3 s; propagation <= 1 s.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import tempfile
import time
from itertools import repeat
from operator import truediv

import cbor2

sys.path.insert(0, os.path.dirname(__file__))
import blake3
from _util import Daemon, pct
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt

from sessiond.client import Client
from sessiond.storage.schema import MIGRATIONS
from sessiond.stores.registry import RegistryEntry
from sessiond.sync import dagcbor
from sessiond.sync.crypto import CHUNK_SIZE, TAG_SIZE, decrypt, manifest_key
from sessiond.sync.keys import KeyStore
from sessiond.sync.pages import Entry

N = int(os.environ.get("BENCH_MESSAGES", 100_000))
CONTENT = "a message of a typical length, with a few words of text in it " * 2


def page_refs(store: str, home: str, sid: str) -> list[bytes]:
    """The ciphertexts of every page of A's log (walking its manifest and nodes)."""
    ks = KeyStore(os.path.join(home, "keys"))
    key = ks.session_key(sid)
    pk = ks.head_pk(sid)
    entry = RegistryEntry.from_bytes(open(os.path.join(store, "heads", pk.hex()), "rb").read())
    h = entry.data[1:]
    ct = open(os.path.join(store, "objects", h.hex()[:2], h.hex()), "rb").read()
    chunks = max(1, -(-len(ct) // (CHUNK_SIZE + TAG_SIZE)))
    man = dagcbor.decode(decrypt(ct, manifest_key(key, pk, entry.revision), len(ct) - chunks * TAG_SIZE, 0))
    out, todo = [], [Entry.from_cbor(e) for lv in reversed(man["l"]) for e in lv]
    while todo:
        e = todo.pop(0)
        data = open(os.path.join(store, "objects", e.ref.hash.hex()[:2], e.ref.hash.hex()), "rb").read()
        if e.parts:
            raise SystemExit("bench/import.py: a page in parts (a message over 1 MiB); this bench writes small ones")
        if e.node:
            plain = decrypt(data, e.ref.key, e.ref.plain.size, e.ref.padding)
            todo = [Entry.from_cbor(c) for c in dagcbor.decode(plain)["e"]] + todo
        else:
            out.append((data, e.ref))
    return out


def raw_limit(store: str, home: str, sid: str, tmp: str) -> float:
    refs = page_refs(store, home, sid)
    db = sqlite3.connect(os.path.join(tmp, "raw.sqlite"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    for stmt in MIGRATIONS[0].split(";"):
        if stmt.strip():
            db.execute(stmt)
    t = time.perf_counter()
    rows = []
    for ct, ref in refs:
        path = os.path.join(store, "objects", ref.hash.hex()[:2], ref.hash.hex())
        ct = open(path, "rb").read()
        blake3.blake3(ct).digest()
        plain = b"".join(
            crypto_aead_xchacha20poly1305_ietf_decrypt(
                ct[i : i + CHUNK_SIZE + TAG_SIZE], None, (n).to_bytes(24, "little"), ref.key
            )
            for n, i in enumerate(range(0, len(ct), CHUNK_SIZE + TAG_SIZE))
        )
        p = cbor2.loads(plain[: ref.plain.size])
        f, n = p["f"], len(p["k"])
        rows.extend(
            r
            for r in zip(
                repeat(sid),
                p["c"],
                repeat(p["d"]),
                range(f, f + n),
                p["l"],
                p["r"],
                p["x"],
                p["n"],
                map(truediv, p["t"], repeat(1000)),
                repeat(None),
            )
            if r[6] is not None
        )
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO messages(session_id, chat_id, device_id, seq, lamport, role, content, tokens,"
        " created_at, extra) VALUES (?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    db.execute("COMMIT")
    return time.perf_counter() - t


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="sd-bench-import-")
    store = os.path.join(tmp, "store")
    url = "file://" + store
    with Daemon(url) as a, Daemon(url) as b:
        ca, cb = Client(a.home), Client(b.home)
        sid = ca.create_session(name="big")["id"]
        for i in range(0, N, 10_000):
            ca.append_many(sid, [{"role": "user", "content": f"{j} {CONTENT}"} for j in range(i, min(N, i + 10_000))])
        code = ca.share(sid)["code"]
        t = time.perf_counter()
        res = cb.import_code(code)
        import_s = time.perf_counter() - t
        assert cb.get_session(sid)["message_count"] == N, "import incomplete"
        raw_s = raw_limit(store, a.home, sid, tmp)
        # propagation: append on A, wait until B lists it
        delays = []
        expect = cb.get_session(sid)["message_count"]
        for i in range(15):
            ca.append(sid, "assistant", f"propagate {i}")
            expect += 1
            t = time.perf_counter()
            while cb.get_session(sid)["message_count"] < expect:
                if time.perf_counter() - t > 10:
                    raise SystemExit("propagation took more than 10 s")
                time.sleep(0.005)
            delays.append(time.perf_counter() - t)
            time.sleep(0.2)
        print(
            json.dumps(
                {
                    "messages": N,
                    "import_seconds": round(import_s, 3),
                    "raw_limit_seconds": round(raw_s, 3),
                    "import_over_raw": round(import_s / raw_s, 2),
                    "propagation_seconds_median": round(pct(delays, 50), 3),
                    "propagation_seconds_max": round(max(delays), 3),
                    "targets": {"import_seconds": 3.0, "import_over_raw": 2.0, "propagation_seconds": 1.0},
                },
                indent=2,
            )
        )
        del res


if __name__ == "__main__":
    main()
