"""Sync over `sessiond serve` (the relay) on loopback, beside the folder store, in the same run. Prints JSON.

* first push of a session of BENCH_MESSAGES (100,000) messages, through the sync engine in this process
  (bench/push.py's full_push: the same session shape, the same measure), to a folder store and to the
  relay (the S5 store over HTTP); with the relay's requests for it, counted from its access log;
* import of a 100,000-message session by share code: two real daemons per store (bench/import.py's way),
  daemon B importing what daemon A pushed;
* the requests one append costs the writer (daemon A alone: its follower is stopped), counted on the
  relay's access log and broken down by route; the change feed's own request (A follows the session
  it shared) is counted apart, since it is a follower's cost and not the append's;
* the delay from an append acknowledged by daemon A to its visibility on a following daemon B.

Targets (issue 15): push and import over the relay within 1.5x the folder store's times; an append
costs at most 3 requests (page, manifest, head); an append reaches a following device within 1 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(__file__))
from _util import Daemon, pct, remove
from push import full_push

from sessiond.client import Client
from sessiond.storage.database import Database
from sessiond.stores import FileStore
from sessiond.stores.s5 import S5Store
from sessiond.sync.engine import Syncer

N = int(os.environ.get("BENCH_MESSAGES", 100_000))
APPENDS = int(os.environ.get("BENCH_APPENDS", 15))
CONTENT = "a message of a typical length, with a few words of text in it " * 2
REQUEST = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d+)')


class Relay:
    """`sessiond serve` as its own process, with its access log in a file."""

    def __init__(self, tmp: str):
        self.data = os.path.join(tmp, "relay")
        self.log_path = os.path.join(tmp, "relay.log")

    def __enter__(self) -> Relay:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sessiond.cli.main",
                "serve",
                "--json",
                "--listen",
                "127.0.0.1:0",
                "--data",
                self.data,
                "--open-registration",
                "--access-log",
            ],
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=30)
            raise SystemExit("bench/relay.py: the relay did not start: " + open(self.log_path).read()[-2000:])
        self.port = json.loads(line)["port"]
        self.url = f"s5+http://127.0.0.1:{self.port}"
        return self

    def mark(self) -> int:
        return os.path.getsize(self.log_path)

    def requests(self, since: int) -> list[tuple[str, str, int]]:
        with open(self.log_path, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
        return [(m[1], m[2].split("?")[0], int(m[3])) for m in REQUEST.finditer(text)]

    def wait_for(self, since: int, method: str, path: str, limit: float = 10.0) -> None:
        t = time.perf_counter()
        while not any(m == method and p == path for m, p, _ in self.requests(since)):
            if time.perf_counter() - t > limit:
                raise SystemExit(f"bench/relay.py: no {method} {path} on the relay within {limit:g} s")
            time.sleep(0.005)

    def settle(self, since: int, quiet: float = 0.3, deadline: float = 10.0) -> list[tuple[str, str, int]]:
        """The requests logged since `since`, once the log has stopped growing for `quiet` seconds (an
        access-log line is written when its answer is sent, so in-flight work shows up late)."""
        t0 = last_change = time.perf_counter()
        size = self.mark()
        while time.perf_counter() - last_change < quiet and time.perf_counter() - t0 < deadline:
            time.sleep(0.02)
            now = self.mark()
            if now != size:
                size, last_change = now, time.perf_counter()
        return self.requests(since)

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()
        self._log.close()


def route(method: str, path: str) -> str:
    if path.startswith("/s5/download/"):
        path = "/s5/download/{cid}"
    return f"{method} {path}"


async def push_both(relay: Relay, tmp: str) -> dict:
    """A first push of N messages to each store by the sync engine in this process (push.py's measure)."""
    out = {}
    for name in ("folder", "relay"):
        db = await Database.open(os.path.join(tmp, f"push-{name}.sqlite"))
        if name == "folder":
            store = FileStore(os.path.join(tmp, "push-store"))
        else:
            store = S5Store(relay.url, account_seed=os.urandom(32), token_dir=os.path.join(tmp, "push-tokens"))
        syncer = Syncer(db, store, os.path.join(tmp, f"push-keys-{name}"), timeout=120)
        mark = relay.mark()
        res = await full_push(db, syncer, N, 124, 124)
        if name == "relay":
            reqs = relay.requests(mark)
            res["relay_requests"] = dict(Counter(route(m, p) for m, p, _ in reqs))
            res["relay_refusals"] = dict(Counter(f"{route(m, p)} {s}" for m, p, s in reqs if s >= 400))
        await syncer.stop()
        await db.close()
        out[name] = res
    out["relay_over_folder"] = round(out["relay"]["seconds"] / out["folder"]["seconds"], 2)
    return out


def fill(client: Client, n: int) -> str:
    sid = client.create_session(name="big")["id"]
    for i in range(0, n, 10_000):
        client.append_many(sid, [{"role": "user", "content": f"{j} {CONTENT}"} for j in range(i, min(n, i + 10_000))])
    client.sync(sid, wait=True, timeout=300)
    return sid


def wait_visible(client: Client, sid: str, expect: int, limit: float = 10.0) -> float:
    t = time.perf_counter()
    while client.get_session(sid)["message_count"] < expect:
        if time.perf_counter() - t > limit:
            raise SystemExit(f"bench/relay.py: an append took more than {limit:g} s to reach the follower")
        time.sleep(0.005)
    return time.perf_counter() - t


def import_and_follow(url: str, relay: Relay | None) -> dict:
    out: dict = {}
    with Daemon(url) as a:
        ca = Client(a.home)
        sid = fill(ca, N)
        code = ca.share(sid)["code"]
        with Daemon(url) as b:
            cb = Client(b.home)
            t = time.perf_counter()
            cb.import_code(code)
            out["import_seconds"] = round(time.perf_counter() - t, 3)
            assert cb.get_session(sid)["message_count"] == N, "import incomplete"
            expect = N
            delays = []
            for i in range(APPENDS):
                ca.append(sid, "assistant", f"propagate {i}")
                expect += 1
                delays.append(wait_visible(cb, sid, expect))
            out["append_to_follower_seconds_median"] = round(pct(delays, 50), 3)
            out["append_to_follower_seconds_max"] = round(max(delays), 3)
        if relay is not None:
            # the follower is gone: what the relay sees now is the writer's alone
            relay.settle(relay.mark())
            per_append, feed = [], []
            for i in range(APPENDS):
                mark = relay.mark()
                ca.append(sid, "assistant", f"cost {i}")
                relay.wait_for(mark, "POST", "/s5/registry")  # the push published its head
                reqs = relay.settle(mark)
                feed.append(sum(1 for m, p, _ in reqs if p == "/s5/registry/changes"))
                per_append.append(Counter(route(m, p) for m, p, _ in reqs if p != "/s5/registry/changes"))
            total = Counter()
            for c in per_append:
                total.update(c)
            out["writer_requests_per_append_median"] = sorted(sum(c.values()) for c in per_append)[len(per_append) // 2]
            out["writer_requests_per_append_max"] = max(sum(c.values()) for c in per_append)
            out["writer_requests_per_append_by_route"] = {k: round(v / APPENDS, 2) for k, v in sorted(total.items())}
            out["feed_requests_per_append"] = round(sum(feed) / APPENDS, 2)
    return out


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="sd-bench-relay-")
    started = time.perf_counter()
    try:
        with Relay(tmp) as relay:
            pushes = asyncio.run(push_both(relay, tmp))
            folder = import_and_follow("file://" + os.path.join(tmp, "store"), None)
            over_relay = import_and_follow(relay.url, relay)
        print(
            json.dumps(
                {
                    "messages": N,
                    "first_push": pushes,
                    "import_seconds": {
                        "folder": folder["import_seconds"],
                        "relay": over_relay["import_seconds"],
                        "relay_over_folder": round(over_relay["import_seconds"] / folder["import_seconds"], 2),
                    },
                    "append_to_follower_seconds": {
                        "folder": {
                            "median": folder["append_to_follower_seconds_median"],
                            "max": folder["append_to_follower_seconds_max"],
                        },
                        "relay": {
                            "median": over_relay["append_to_follower_seconds_median"],
                            "max": over_relay["append_to_follower_seconds_max"],
                        },
                    },
                    "relay_requests_per_append": {k: v for k, v in over_relay.items() if "requests" in k},
                    "run_seconds": round(time.perf_counter() - started, 1),
                    "targets": {"relay_over_folder": 1.5, "requests_per_append": 3, "append_to_follower_seconds": 1.0},
                },
                indent=2,
            )
        )
    finally:
        remove(tmp)


if __name__ == "__main__":
    main()
