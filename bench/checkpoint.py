"""Checkpoint cost: a checkpoint (`POST /v1/sessions/{id}/checkpoints`) over N new messages, and the first
checkpoint after a restart, which reads and hashes the whole session once; each beside its floor, measured
in the same run. Prints JSON.

One session of chat-sized messages (user turns of 280 characters, answers of 860, as bench/push.py's
"chat" mix) gets N new messages (BENCH_SIZES, default 100, 1,000, 10,000: 5,000 per request) and then a
checkpoint, three times for each N in turn (BENCH_REPEAT; the medians are reported); then the daemon is
restarted on the same home and one message appended, and the next checkpoint covers the whole session
from the start (the daemon keeps the chain of its last checkpoint in memory only). Each checkpoint
reports the client's wall time and the daemon's CPU (user + system, every thread, from /proc's
schedstat) over the request. Before each, a search makes the daemon index what was appended (its
indexer would otherwise run during the checkpoint and be counted in its CPU); the session's policy sets
no automatic checkpoints.

The floor (docs/FORMATS.md §8, version 2), computed directly with the libraries over the same messages (the
same device, seq, chat, role and content, and no fields beyond them): DAG-CBOR of [device, seq, chat, role,
content, {}] and one BLAKE3 of the previous hash and it per message, then one Ed25519 signature of a proof's
CBOR; no SQLite read, no sessiond code (the session's setting, hashed once, left out). The best of 3
computations.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import blake3
import cbor2
from _util import Daemon, remove
from nacl.signing import SigningKey
from push import text  # chat-like text of the length asked, from a list of common words

from sessiond.client import Client

SIZES = [int(x) for x in os.environ.get("BENCH_SIZES", "100,1000,10000").split(",")]
BATCH = 5_000
REPEAT = int(os.environ.get("BENCH_REPEAT", 3))  # checkpoints per size (their median)
USER, ASSISTANT = 280, 860  # characters: bench/push.py's "chat" mix


def chain_floor(messages: list[tuple], key: SigningKey) -> float:
    """Seconds: the conversation hash over `messages` (device, seq, chat, role, content) and one signature;
    the best of 3."""
    proof = {
        "created_at": 1.7e9,
        "device": messages[0][0] if messages else "",
        "frontier": {messages[0][0]: len(messages)} if messages else {},
        "messages": len(messages),
        "number": 1,
        "pk": "ed" + "00" * 32,
        "session": "s" * 26,
        "tokens": 0,
        "v": 2,
    }
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        h = b"\x00" * 32
        for m in messages:
            h = blake3.blake3(h + cbor2.dumps([*m, {}])).digest()
        key.sign(cbor2.dumps({**proof, "hash": h.hex()}))
        best = min(best, time.perf_counter() - t)
    return best


def cpu_ns(pid: int) -> int:
    """The CPU time every thread of `pid` has run so far, in nanoseconds (schedstat: finer than the clock
    ticks of /proc/PID/stat, which a checkpoint of a few milliseconds would round to 0 or 10 ms)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:  # a thread that ended meanwhile
            pass
    return total


def timed_checkpoint(d: Daemon, c: Client, sid: str) -> tuple[dict, float, float]:
    """The checkpoint, its wall seconds and the daemon's CPU seconds over it."""
    c.search("the")  # the index caught up first: its work is not the checkpoint's
    cpu = cpu_ns(d.proc.pid)
    t = time.perf_counter()
    proof = c.checkpoint(sid)
    wall = time.perf_counter() - t
    return proof, wall, (cpu_ns(d.proc.pid) - cpu) / 1e9


def append(c: Client, sid: str, rng: random.Random, n: int, start: int) -> list[tuple]:
    """`n` messages appended (user and assistant alternating); each as the hash takes it, without device."""
    out = []
    for i in range(0, n, BATCH):
        batch = []
        for j in range(start + i, start + min(n, i + BATCH)):
            role = ("user", "assistant")[j % 2]
            batch.append({"role": role, "content": f"{j} {text(rng, USER if role == 'user' else ASSISTANT)}"})
        res = c.append_many(sid, batch)
        first = res["first_seq"]
        out += [(first + k, res["chat"], m["role"], m["content"]) for k, m in enumerate(batch)]
    return out


def main() -> None:
    rng = random.Random(8)
    key = SigningKey.generate()
    runs = []
    messages: list[tuple] = []  # (seq, chat, role, content) of every message, in order
    tmp = tempfile.mkdtemp(prefix="sd-bench-checkpoint-")
    home = os.path.join(tmp, "home")  # kept across the restart (a Daemon removes only its own folder)
    try:
        with Daemon(home=home) as d, Client(d.home) as c:
            sid = c.create_session(name="bench", policy={"checkpoint_interval": 1 << 40})["id"]
            device = ""
            for n in SIZES:
                walls, cpus, floors = [], [], []
                for _ in range(REPEAT):
                    new = append(c, sid, rng, n, len(messages))
                    messages += new
                    proof, wall, cpu = timed_checkpoint(d, c, sid)
                    device = proof["device"]
                    assert proof["messages"] == len(messages), proof
                    walls.append(wall)
                    cpus.append(cpu)
                    floors.append(chain_floor([(device, *m) for m in new], key))
                runs.append(
                    {
                        "new_messages": n,
                        "session_messages_after": len(messages),
                        "ms": round(statistics.median(walls) * 1000, 2),
                        "daemon_cpu_ms": round(statistics.median(cpus) * 1000, 2),
                        "floor_ms": round(statistics.median(floors) * 1000, 2),
                    }
                )
        with Daemon(home=home) as d2, Client(d2.home) as c:
            messages += append(c, sid, rng, 1, len(messages))
            proof, wall, cpu = timed_checkpoint(d2, c, sid)
            assert proof["messages"] == len(messages), proof
            floor = chain_floor([(device, *m) for m in messages], key)
            restart = {
                "session_messages": len(messages),
                "ms": round(wall * 1000, 2),
                "daemon_cpu_ms": round(cpu * 1000, 2),
                "floor_ms": round(floor * 1000, 2),
            }
    finally:
        remove(tmp)
    print(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "command": "python bench/checkpoint.py",
                "message_chars_user_assistant": [USER, ASSISTANT],
                "checkpoints": runs,
                "first_after_restart": restart,
                "loadavg": [round(x, 2) for x in os.getloadavg()],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
