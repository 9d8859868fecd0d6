"""What each read and write costs at scale, against a real daemon: does it grow with the home's totals or
with what it returns? Prints JSON.

A home is built with SCALE_SESSIONS small sessions (4 messages each, 40 users, a tag each) and one big session
of SCALE_MESSAGES messages over 3 chats (every 20th message an assistant's tool call and its tool result),
through batched appends; then each call of the API (and a few of the CLI, which add a Python start) is timed
there and in a home of a tenth of both sizes. Each figure is the median of SCALE_RUNS calls, in ms.
`ratio`: full / tenth. A call whose cost follows what it returns (a page, one session) stays near 1; one that
reads the totals grows towards 10 (the sizes' ratio). The destructive calls (rm, end, compact, clone,
fork) act on sessions of their own, so each run acts on the same size. The floor: the same pages' SQL through
the sqlite3 module alone on the same file (`sqlite: ...`), beside the socket's HTTP round trip (bench/floors.py).

Nothing is timed before the home's folder store holds every session (`sync --wait`): the first push of each
new session runs in the background meanwhile (~28 ms of wall time a session on the 2-core development machine,
O(1) each) and would be timed with the calls. That wait sets the default size: 3,000 sessions (their pushes
~90 s; at 10,000, ~280 s) and 100,000 messages, about 2.5 minutes in all; SCALE_SESSIONS=10000 for the
brief's size.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(__file__))
from _util import Daemon

from sessiond.client import Client

SESSIONS = int(os.environ.get("SCALE_SESSIONS", 3_000))
MESSAGES = int(os.environ.get("SCALE_MESSAGES", 100_000))
RUNS = int(os.environ.get("SCALE_RUNS", 5))
CLI_RUNS = int(os.environ.get("SCALE_CLI_RUNS", 3))
USERS = 40
CHATS = ("main", "second", "third")
CONFIG = "push_delay = 3600\nsync_interval = 3600\n"  # the sync worker held back: the calls alone are timed


def _home_with_config() -> str:
    import tempfile

    home = os.path.join(tempfile.mkdtemp(prefix="sd-bench-"), "home")
    os.makedirs(home, mode=0o700)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write(CONFIG)
    return home


def build(c: Client, sessions: int, messages: int) -> dict:
    """The home's data: `sessions` small sessions, and the big one (its id and the ids the calls use)."""
    t0 = time.perf_counter()
    small = []
    for i in range(sessions):
        sid = c.create_session(name=f"small {i}", user=f"user{i % USERS}", tags=[f"tag{i % 7}"])["id"]
        c.append_many(
            sid,
            [
                {"role": "user", "content": f"question {i} about topic{i % 97}"},
                {"role": "assistant", "content": f"answer {i} with a little text in it"},
                {"role": "user", "content": "thanks"},
                {"role": "assistant", "content": "you are welcome"},
            ],
        )
        small.append(sid)
    small_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    big = c.create_session(name="big", user="biguser", system_prompt="You are a helpful assistant.")["id"]
    for name in CHATS[1:]:
        c.create_chat(big, name=name)
    per_chat = messages // len(CHATS)
    batch = 5000
    for chat in CHATS:
        done = 0
        while done < per_chat:
            n = min(batch, per_chat - done)
            msgs: list = []
            for j in range(done, done + n):
                if j % 20 == 18:
                    msgs.append(
                        {
                            "role": "assistant",
                            "content": "",
                            "tool_calls": [
                                {
                                    "id": f"call_{chat}_{j}",
                                    "type": "function",
                                    "function": {"name": "lookup", "arguments": json.dumps({"q": f"item {j}"})},
                                }
                            ],
                        }
                    )
                elif j % 20 == 19:
                    msgs.append({"role": "tool", "tool_call_id": f"call_{chat}_{j - 1}", "content": f"result {j}"})
                else:
                    role = "user" if j % 2 == 0 else "assistant"
                    msgs.append({"role": role, "content": f"{chat} message {j} about topic{j % 97} " + "lorem " * 12})
            c.append_many(big, msgs, chat=chat)
            done += n
    big_s = time.perf_counter() - t0
    # the first pushes of the new sessions (to the home's folder store) finish before anything is timed
    t0 = time.perf_counter()
    c.sync(wait=True, timeout=3600)
    sync_s = time.perf_counter() - t0
    return {
        "small": small,
        "big": big,
        "build_small_s": round(small_s, 1),
        "build_big_s": round(big_s, 1),
        "sync_wait_s": round(sync_s, 1),
    }


def timed(fn: Callable[[int], object], runs: int = RUNS) -> float:
    """Median ms of fn(i) over `runs` calls (after one not counted, unless runs == 1)."""
    if runs > 1:
        fn(-1)
    lat = []
    for i in range(runs):
        t = time.perf_counter()
        fn(i)
        lat.append((time.perf_counter() - t) * 1000)
    return statistics.median(lat)


def cli(home: str, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "sessiond.cli.main", *args, "--home", home],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def floors(home: str, big: str) -> dict[str, float]:
    """The floor beside the figures: the same reads' SQL through the sqlite3 module alone, on the same file (a
    read-only connection beside the running daemon), no sessiond code, no socket: ms, median of RUNS."""
    import sqlite3

    db = sqlite3.connect(f"file:{os.path.join(home, 'sessions.db')}?mode=ro", uri=True)
    chat = db.execute("SELECT chat_id FROM messages WHERE session_id=? LIMIT 1", (big,)).fetchone()[0]
    page = "SELECT * FROM messages WHERE session_id=? AND chat_id=? ORDER BY lamport, device_id, seq LIMIT 100"
    f = {
        "sqlite: a page of one chat (100 rows)": timed(lambda i: db.execute(page, (big, chat)).fetchall()),
        "sqlite: a page of sessions (100 rows)": timed(
            lambda i: db.execute("SELECT * FROM sessions ORDER BY id LIMIT 100").fetchall()
        ),
        "sqlite: one session's row": timed(
            lambda i: db.execute("SELECT * FROM sessions WHERE id=?", (big,)).fetchall()
        ),
    }
    db.close()
    return f


def measure(sessions: int, messages: int) -> dict:
    with Daemon(home=_home_with_config()) as d:
        c = Client(d.home)
        data = build(c, sessions, messages)
        small, big = data["small"], data["big"]
        out: dict = {"sessions": sessions + 1, "messages": sessions * 4 + messages, **data}
        del out["small"], out["big"]
        t: dict[str, float] = {}

        def pick(block: int, i: int) -> str:  # a small session of its own for each block of calls and run
            return small[(block * (RUNS + 2) + i + 1) % len(small)]

        page = c.list_sessions(limit=100)
        later = page
        for _ in range(5):
            if later.get("next"):
                later = c.list_sessions(limit=100, after=later["next"])
        t["list first page (100)"] = timed(lambda i: c.list_sessions(limit=100))
        t["list a later page (100, 6th)"] = timed(lambda i: c.list_sessions(limit=100, after=later["next"]))
        t["list by user (100)"] = timed(lambda i: c.list_sessions(user="user3", limit=100))
        t["list by tag (100)"] = timed(lambda i: c.list_sessions(tag="tag3", limit=100))
        t["list by a tag no session has"] = timed(lambda i: c.list_sessions(tag="absent", limit=100))
        t["list by status paused (100)"] = timed(lambda i: c.list_sessions(status="paused", limit=100))
        t["show a small session"] = timed(lambda i: c.get_session(pick(0, i)))
        t["show the big session"] = timed(lambda i: c.get_session(big))
        t["stats global"] = timed(lambda i: c.stats(), 3)
        t["stats of a user"] = timed(lambda i: c.stats(user="user3"), 3)
        t["stats of a small session"] = timed(lambda i: c.stats(session=pick(0, i)))
        t["stats of the big session, its first"] = timed(lambda i: c.stats(session=big), 1)
        t["stats of the big session"] = timed(lambda i: c.stats(session=big), 3)
        t["search, rare word"] = timed(lambda i: c.search("topic13", limit=20))
        t["search in the big session"] = timed(lambda i: c.search("topic13", session=big, limit=20))
        t["messages first page (100)"] = timed(lambda i: c.messages(big, limit=100))
        first = c.messages(big, chat="main", limit=100)
        t["messages a later page (100)"] = timed(lambda i: c.messages(big, limit=100, after=first["next"]))
        t["messages last page (100)"] = timed(lambda i: c.messages(big, limit=100, last=True))
        t["messages all chats, first page"] = timed(lambda i: c.messages(big, limit=100, all_chats=True))
        t["context of the big session"] = timed(lambda i: c.context(big))
        t["quota of the big session"] = timed(lambda i: c.quota(big))
        t["append one to the big session"] = timed(lambda i: c.append(big, "user", f"one more {i}"))
        t["append one to a small session"] = timed(lambda i: c.append(pick(0, i), "user", f"one more {i}"))
        t["checkpoint of the big session"] = timed(lambda i: c.checkpoint(big), 3)
        t["checkpoints list"] = timed(lambda i: c.checkpoints(big))
        t["compact the big session (main)"] = timed(lambda i: c.compact(big, target_tokens=1000), 1)
        t["context of the big session, compacted"] = timed(lambda i: c.context(big))
        t["uncompact the big session (main)"] = timed(lambda i: c.uncompact(big), 1)
        t["switch chat"] = timed(lambda i: c.switch_chat(big, CHATS[i % 3]))
        t["new chat"] = timed(lambda i: c.create_chat(pick(1, i), name=f"extra{i}"))
        t["PATCH a small session"] = timed(lambda i: c.update_session(pick(0, i), name=f"renamed {i}"))
        t["PATCH the big session"] = timed(lambda i: c.update_session(big, name=f"big {i}"))
        t["pause + resume a small session"] = timed(lambda i: (c.pause(pick(2, i)), c.resume(pick(2, i))))
        t["status"] = timed(lambda i: c.status())
        t["shares"] = timed(lambda i: c.shares())
        t["export the big session (json)"] = timed(lambda i: c.export(big), 1)
        t["clone the big session"] = timed(lambda i: c.clone(big, name=f"clone {i}"), 3)
        # (of chat main, as `first`: `switch chat` above left another chat current)
        mid = c.messages(big, chat="main", limit=1, after=first["next"])["messages"][0]["id"]
        t["fork the big session at message 101"] = timed(lambda i: c.fork(big, mid, name=f"fork {i}"), 3)
        t["end a small session"] = timed(lambda i: c.end(pick(3, i)))
        t["rm a small session"] = timed(lambda i: c.delete_session(pick(4, i)))
        t["cleanup sweep, dry run (none old)"] = timed(lambda i: c.cleanup(10 * 365 * 86400, dry_run=True), 3)
        t["doctor (no verify)"] = timed(lambda i: c.doctor(verify=False), 3)
        t["doctor"] = timed(lambda i: c.doctor(), 1)
        c.close()
        t.update(floors(d.home, big))
        # the CLI: its own start (a Python process) is in each figure
        h = d.home
        t["cli: status"] = timed(lambda i: cli(h, "status"), CLI_RUNS)
        t["cli: ls"] = timed(lambda i: cli(h, "ls"), CLI_RUNS)
        t["cli: show big"] = timed(lambda i: cli(h, "show", big), CLI_RUNS)
        t["cli: log --short --last 100 big"] = timed(lambda i: cli(h, "log", "--short", "--last", "100", big), CLI_RUNS)
        t["cli: log --short big (whole chat)"] = timed(lambda i: cli(h, "log", "--short", big), 1)
        t["cli: stats"] = timed(lambda i: cli(h, "stats"), CLI_RUNS)
        out["ms"] = {k: round(v, 2) for k, v in t.items()}
        return out


def main() -> None:
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    tenth = measure(max(1, SESSIONS // 10), max(60, MESSAGES // 10))
    full = measure(SESSIONS, MESSAGES)
    calls = {}
    for k, v in full["ms"].items():
        small = tenth["ms"][k]
        calls[k] = {"full_ms": v, "tenth_ms": small, "ratio": round(v / small, 2) if small else None}
    print(
        json.dumps(
            {
                "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
                "environment": {k: v for k, v in os.environ.items() if k.startswith("SCALE_")},
                "loadavg_before": [round(x, 2) for x in load0],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                "total_s": round(time.perf_counter() - t0, 1),
                "runs_per_call": RUNS,
                "full": {k: v for k, v in full.items() if k != "ms"},
                "tenth": {k: v for k, v in tenth.items() if k != "ms"},
                "calls": calls,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
