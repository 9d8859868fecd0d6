"""This machine's floors: what the libraries sessiond stands on do at best here, so that the other
benchmarks' figures can be read against them (the README's cost table quotes both). Prints JSON; run:
    python bench/floors.py > bench/results/floors.json

* BLAKE3 of a 1 MiB object (GB/s), the hash of every object put or read;
* XChaCha20-Poly1305 through nacl.bindings in 64 KiB chunks (MB/s), encrypt and decrypt;
* cbor2 encode/decode of a 9-field operation map (ops/s);
* SQLite rows/s into a WAL database with synchronous=NORMAL in a temporary folder: one transaction per
  row, and one executemany in a single transaction;
* an aiohttp HTTP round trip over a Unix socket (p50/p99 ms), as a client's request to the daemon;
* the load row's floor: 16 threads of sessiond's blocking Client appending, as bench/load.py's clients
  do, to a trivial aiohttp handler in its own process on a Unix socket (requests/s, and the CPU per
  request of that server and of the clients): what this machine allows the append path at most.

Each rate is the best of 5 rounds of wall time (latencies: percentiles of 2,000 requests) on a
shared machine; load average is reported beside them.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sqlite3
import statistics
import tempfile
import time


def best_rate(fn, work: float, rounds: int = 5, min_time: float = 0.2) -> float:
    """Best of `rounds` of: `fn` called until `min_time` passes; `work` units per call; units/s."""
    best = 0.0
    for _ in range(rounds):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_time:
                break
        best = max(best, n * work / dt)
    return best


def blake3_floor() -> dict:
    import blake3

    data = os.urandom(1 << 20)
    return {"blake3_1mib_gb_per_s": round(best_rate(lambda: blake3.blake3(data).digest(), len(data)) / 1e9, 2)}


def xchacha_floor() -> dict:
    from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt as dec
    from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt as enc

    key, nonce, chunk = bytes(32), bytes(24), os.urandom(64 << 10)
    sealed = enc(chunk, None, nonce, key)
    return {
        "xchacha20poly1305_64kib_encrypt_mb_per_s": round(
            best_rate(lambda: enc(chunk, None, nonce, key), len(chunk)) / 1e6
        ),
        "xchacha20poly1305_64kib_decrypt_mb_per_s": round(
            best_rate(lambda: dec(sealed, None, nonce, key), len(chunk)) / 1e6
        ),
    }


def cbor_floor() -> dict:
    import cbor2

    op = {  # an operation as a page holds it: nine fields (docs/FORMATS.md, "Snapshot layout")
        "b": {"model": "m", "temperature": 0.2},
        "c": "main",
        "d": "dev-0123456789abcdef",
        "k": "message.add",
        "l": 123456,
        "n": 42,
        "r": "user",
        "s": 98765,
        "x": "a message of about one line of text, as a chat has them " * 2,
    }
    blob = cbor2.dumps(op)
    return {
        "cbor2_encode_9_field_op_per_s": round(best_rate(lambda: cbor2.dumps(op), 1)),
        "cbor2_decode_9_field_op_per_s": round(best_rate(lambda: cbor2.loads(blob), 1)),
    }


def sqlite_floor() -> dict:
    with tempfile.TemporaryDirectory(prefix="sd-floors-") as d:
        db = sqlite3.connect(os.path.join(d, "f.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, session TEXT, seq INTEGER, body TEXT)")
        body = "x" * 200
        n = 2000
        t0 = time.perf_counter()
        for i in range(n):
            db.execute("BEGIN")
            db.execute("INSERT INTO t(session, seq, body) VALUES (?, ?, ?)", ("s", i, body))
            db.execute("COMMIT")
        one_each = n / (time.perf_counter() - t0)
        rows = [("b", i, body) for i in range(100_000)]
        best = 0.0
        for _ in range(3):
            t0 = time.perf_counter()
            db.execute("BEGIN")
            db.executemany("INSERT INTO t(session, seq, body) VALUES (?, ?, ?)", rows)
            db.execute("COMMIT")
            best = max(best, len(rows) / (time.perf_counter() - t0))
        db.close()
    return {
        "sqlite_wal_normal_rows_per_s_one_transaction_each": round(one_each),
        "sqlite_wal_normal_rows_per_s_executemany_batched": round(best),
        "sqlite_version": sqlite3.sqlite_version,
    }


async def _http_round_trips(n: int = 2000) -> list[float]:
    import aiohttp
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/v1/health", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    with tempfile.TemporaryDirectory(prefix="sd-floors-") as d:
        path = os.path.join(d, "s.sock")
        await web.UnixSite(runner, path).start()
        times = []
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as s:
            for i in range(n + 200):
                t0 = time.perf_counter()
                async with s.get("http://localhost/v1/health") as r:
                    await r.read()
                if i >= 200:  # after a warm-up
                    times.append(time.perf_counter() - t0)
        await runner.cleanup()
    return times


def http_floor() -> dict:
    times = sorted(asyncio.run(_http_round_trips()))
    q = statistics.quantiles(times, n=100)
    return {
        "aiohttp_unix_socket_round_trip_p50_ms": round(q[49] * 1000, 3),
        "aiohttp_unix_socket_round_trip_p99_ms": round(q[98] * 1000, 3),
    }


async def _trivial_server(path: str) -> None:
    """What an append costs aiohttp alone: the same route shape and an answer of the same size."""
    from aiohttp import web

    answer = {"id": "m_0123456789abcdefghij", "session": "s", "chat": "main", "seq": 1, "role": "user"}

    async def append(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(answer, status=201)

    app = web.Application()
    app.router.add_post("/v1/sessions/{id}/messages", append)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.UnixSite(runner, path).start()
    await asyncio.Event().wait()


def load_floor(clients: int = 16, per_client: int = 1000) -> dict:
    import resource
    import subprocess
    import sys
    import threading

    from sessiond.client import Client

    def cpu(pid: int) -> float:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def own() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    with tempfile.TemporaryDirectory(prefix="sd-floors-") as d:
        path = os.path.join(d, "s.sock")
        server = subprocess.Popen([sys.executable, __file__, "--serve", path])
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(path):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the trivial server did not start")
                time.sleep(0.02)

            def client(n: int) -> None:
                with Client(socket=path) as c:
                    for i in range(n):
                        c.append("s", "user", f"message {i} " + "x" * 60)

            client(200)  # warm-up
            s0, c0, t0 = cpu(server.pid), own(), time.perf_counter()
            threads = [threading.Thread(target=client, args=(per_client,)) for _ in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall, n = time.perf_counter() - t0, clients * per_client
            s1, c1 = cpu(server.pid), own()
        finally:
            server.terminate()
            server.wait(10)
    return {
        "load_floor_clients": clients,
        "load_floor_requests_per_s": round(n / wall),
        "load_floor_server_cpu_us_per_request": round((s1 - s0) / n * 1e6),
        "load_floor_client_cpu_us_per_request": round((c1 - c0) / n * 1e6),
    }


def main() -> None:
    import json

    import aiohttp
    import nacl

    out: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "load_average_before": round(os.getloadavg()[0], 1),
        "command": "python bench/floors.py",
        "versions": {"aiohttp": aiohttp.__version__, "pynacl": nacl.__version__},
    }
    for part in (blake3_floor, xchacha_floor, cbor_floor, sqlite_floor, http_floor, load_floor):
        out.update(part())
    out["load_average_after"] = round(os.getloadavg()[0], 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--serve"]:  # load_floor's server process
        asyncio.run(_trivial_server(sys.argv[2]))
    else:
        main()
