"""Append throughput and latency over the socket, against a real daemon. Prints JSON.

Targets (issue 2, this 2-core machine): single append p99 <= 2 ms; batched >= 50,000 messages/s.
BENCH_TRANSPORT: how the client appends, `stream` (the default: the append stream, GET /v1/appends) or
`http` (a POST per append); `transport` in the output says which.
`short_writers`: the daemon's CPU per client for BENCH_SHORT clients, one after another, each appending 1,
2, 3 or 10 times and closing (a script's appends: what the client's choice of transport costs the daemon
when the stream's handshake is not spread over many appends).
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _util import Daemon, pct
from load import cpu_split

from sessiond.client import Client

SINGLE = int(os.environ.get("BENCH_SINGLE", 3000))
BATCH = int(os.environ.get("BENCH_BATCH", 5000))
BATCHES = int(os.environ.get("BENCH_BATCHES", 20))
SHORT = int(os.environ.get("BENCH_SHORT", 400))
TRANSPORT = os.environ.get("BENCH_TRANSPORT", "stream")
if TRANSPORT not in ("stream", "http"):
    raise SystemExit(f"BENCH_TRANSPORT must be stream or http, not {TRANSPORT!r}")


def run(config: str | None) -> dict:
    home = None
    if config is not None:
        import tempfile

        home = os.path.join(tempfile.mkdtemp(prefix="sd-bench-"), "home")
        os.makedirs(home, mode=0o700)
        with open(os.path.join(home, "config.toml"), "w") as f:
            f.write(config)
    with Daemon(home=home) as d:
        c = Client(d.home, append_stream=TRANSPORT == "stream")
        sid = c.create_session(name="bench")["id"]
        for _ in range(200):  # warm up
            c.append(sid, "user", "warm")
        lat = []
        cpu0, own0 = cpu_split(d.proc.pid), time.process_time()
        t0 = time.perf_counter()
        for i in range(SINGLE):
            t = time.perf_counter()
            c.append(sid, "user", f"single message {i} with a little text in it")
            lat.append((time.perf_counter() - t) * 1000)
        single_total = time.perf_counter() - t0
        cpu1, own1 = cpu_split(d.proc.pid), time.process_time()
        msgs = [
            {"role": "assistant", "content": f"batched message {i} " + "lorem ipsum " * 8, "tokens": 20}
            for i in range(BATCH)
        ]
        t0 = time.perf_counter()
        for _ in range(BATCHES):
            c.append_many(sid, msgs)
        batch_total = time.perf_counter() - t0
        short = {}
        for n in (1, 2, 3, 10) if SHORT > 0 else ():  # BENCH_SHORT=0: no short writers
            cpu0 = cpu_split(d.proc.pid)
            for _ in range(SHORT):
                with Client(d.home, append_stream=TRANSPORT == "stream") as w:
                    for i in range(n):
                        w.append(sid, "user", f"short writer's message {i}")
            cpu1 = cpu_split(d.proc.pid)
            short[f"{n}_appends_daemon_cpu_us_per_client"] = round((sum(cpu1) - sum(cpu0)) / SHORT * 1e6)
        return {
            "short_writers": short,
            "single_appends": SINGLE,
            "single_per_second": round(SINGLE / single_total, 1),
            "single_p50_ms": round(pct(lat, 50), 3),
            "single_p99_ms": round(pct(lat, 99), 3),
            "single_max_ms": round(max(lat), 3),
            # the daemon's CPU (user + system, from /proc) per single append, one client: issue 17's row 1
            "single_daemon_cpu_us": round((sum(cpu1) - sum(cpu0)) / SINGLE * 1e6),
            "single_daemon_sys_cpu_us": round((cpu1[1] - cpu0[1]) / SINGLE * 1e6),
            "single_client_cpu_us": round((own1 - own0) / SINGLE * 1e6),  # this process's: the client's
            "batch_size": BATCH,
            "batched_messages": BATCH * BATCHES,
            "batched_messages_per_second": round(BATCH * BATCHES / batch_total, 1),
        }


def main() -> None:
    print(
        json.dumps(
            {
                "transport": TRANSPORT,
                # The append path alone: the sync worker is held back so it does not share the two cores.
                "sync_idle": run("push_delay = 3600\nsync_interval = 3600\n"),
                # Default settings: the sync worker encrypts and pushes the same messages meanwhile.
                "default_settings": run(None),
                "targets": {"single_p99_ms": 1.5, "batched_messages_per_second": 50000},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
