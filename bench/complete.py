"""The time sessiond adds to a streamed answer (issue 16). Prints JSON.

A loopback OpenAI-compatible provider (tests/servers/openai_server.py, its own process) streams an answer
of BENCH_WORDS chunks; the same streamed request goes straight to it and through sessiond's
OpenAI-compatible endpoint (openai_listen, bearer key, one session that records every exchange),
alternately, BENCH_N times each. Reported: first token and whole answer, median and p90, and what
sessiond adds at the median. Target: at most 2 ms more at the median for the first token, and no
buffering (every chunk arrives through sessiond as its own event, as many as straight from the provider).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import aiohttp
from _util import Daemon, pct

from sessiond.client import Client

N = int(os.environ.get("BENCH_N", 200))
WORDS = int(os.environ.get("BENCH_WORDS", 50))
HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far (as bench/load.py reads it)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def one(http: aiohttp.ClientSession, url: str, headers: dict, body: dict) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    first = None
    chunks = 0
    async with http.post(url, json=body, headers=headers) as resp:
        assert resp.status == 200, (resp.status, await resp.text())
        async for line in resp.content:
            if line.startswith(b"data: {"):
                chunk = json.loads(line[6:])
                if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                    chunks += 1
                    if first is None:
                        first = time.perf_counter()
    end = time.perf_counter()
    return (first - t0) * 1000, (end - t0) * 1000, chunks


async def measure(direct: str, via: str, key: str, sid: str) -> dict:
    text = " ".join(f"w{i}" for i in range(WORDS - 1))
    body = {"model": "echo-1", "stream": True, "messages": [{"role": "user", "content": text}]}
    res = {"direct": ([], [], []), "sessiond": ([], [], [])}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        for _ in range(10):  # warm up both paths
            await one(http, direct, {}, body)
            await one(http, via, {"Authorization": f"Bearer {key}", "X-Sessiond-Session": sid}, body)
        for i in range(N):
            body["messages"][0]["content"] = f"{i} {text}"
            for name, url, headers in (
                ("direct", direct, {}),
                ("sessiond", via, {"Authorization": f"Bearer {key}", "X-Sessiond-Session": sid}),
            ):
                f, t, c = await one(http, url, headers, body)
                res[name][0].append(f)
                res[name][1].append(t)
                res[name][2].append(c)
    out = {}
    for name, (f, t, c) in res.items():
        out[name] = {
            "first_token_ms_p50": round(pct(f, 50), 3),
            "first_token_ms_p90": round(pct(f, 90), 3),
            "answer_ms_p50": round(pct(t, 50), 3),
            "answer_ms_p90": round(pct(t, 90), 3),
            "chunks": sorted(set(c)),
        }
    out["added_first_token_ms_p50"] = round(
        out["sessiond"]["first_token_ms_p50"] - out["direct"]["first_token_ms_p50"], 3
    )
    out["added_answer_ms_p50"] = round(out["sessiond"]["answer_ms_p50"] - out["direct"]["answer_ms_p50"], 3)
    # every chunk came through as its own event: as many per answer as straight from the provider
    out["no_buffering"] = out["sessiond"]["chunks"] == out["direct"]["chunks"] and len(out["direct"]["chunks"]) == 1
    return out


def main() -> None:
    port = free_port()
    provider = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "..", "tests", "servers", "openai_server.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.path.join(HERE, "..", "tests")},
    )
    home = os.path.join(tempfile.mkdtemp(prefix="sd-bench-"), "home")
    os.makedirs(home, mode=0o700)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write(
            f'openai_listen = "127.0.0.1:0"\ndefault_provider = "loop"\n'
            f'[providers.loop]\nbase_url = "http://127.0.0.1:{port}/v1"\n'
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the loopback provider did not start") from None
                time.sleep(0.05)
        with Daemon(home=home) as d:
            c = Client(d.home)
            info = c.status()["openai"]
            with open(info["api_key_file"]) as f:
                key = f.read().strip()
            sid = c.create_session(name="bench", model="echo-1")["id"]
            cpu0 = cpu_s(d.proc.pid)
            out = asyncio.run(
                measure(
                    f"http://127.0.0.1:{port}/v1/chat/completions", info["base_url"] + "/chat/completions", key, sid
                )
            )
            # the daemon's CPU per answer (warm-up included): steadier than wall time on a busy machine
            out["daemon_cpu_ms_per_answer"] = round((cpu_s(d.proc.pid) - cpu0) * 1000 / (N + 10), 3)
            out["recorded_messages"] = c.status()["counts"]["messages"]  # each question and answer via sessiond
    finally:
        provider.terminate()
        provider.wait(timeout=10)
    print(
        json.dumps(
            {
                "bench": "complete",
                "date": time.strftime("%Y-%m-%d %H:%M"),
                "loadavg": [round(x, 2) for x in os.getloadavg()],
                "runs": N,
                "words": WORDS,
                **out,
                "target_added_first_token_ms_p50": 2.0,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
