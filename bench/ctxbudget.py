"""What a chat's length costs an append to it when it has a context budget: the daemon's CPU per append (user +
system, from /proc) over the append stream, one client, one session with a budget (max_context_tokens, large
enough that nothing compacts meanwhile) and a 50 KB system prompt, its chat holding 100 or 10,000 active messages
before the appends measured. Prints JSON; run:
    python bench/ctxbudget.py > bench/results/ctxbudget.json

Schema migration 22 (storage/contexttotals.py) keeps the chat's active tokens by trigger and caches the fixed
tokens (prompt, initial messages) under a stamp of the texts: before it, the budget check read every active
message of the chat and the texts on every append. CTXBUDGET_BASE: a folder whose `sessiond` is another
version's code (e.g. `git archive main` unpacked into BASE/sessiond): each case runs on it too, alternated with
this checkout's, round by round. Best and median of CTXBUDGET_ROUNDS rounds (3) of CTXBUDGET_APPENDS appends
(1,000), after 100 to warm up; CTXBUDGET_CASES: some of the cases, by name, comma-separated.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _util import alternated, cpu_per_append, daemon_on

from sessiond.client import Client

ROUNDS = int(os.environ.get("CTXBUDGET_ROUNDS", 3))
APPENDS = int(os.environ.get("CTXBUDGET_APPENDS", 1000))
BASE = os.environ.get("CTXBUDGET_BASE")
CONFIG = "push_delay = 3600\nsync_interval = 3600\n"  # the append path alone: the sync worker held back
PROMPT = ("a pasted document, line after line. " * 1400)[:50_000]
CASES = {"active_100": 100, "active_10000": 10_000}
if os.environ.get("CTXBUDGET_CASES"):
    CASES = {k: CASES[k] for k in os.environ["CTXBUDGET_CASES"].split(",")}


def _one(held: int, code: str | None) -> float:
    """The daemon's CPU per append (us) for one round with `held` messages first, on this checkout's code or
    `code`'s."""
    d = daemon_on(CONFIG, code)
    try:
        c = Client(d.home, append_stream=True)
        sid = c.create_session(name="bench", system_prompt=PROMPT, max_context_tokens=1_000_000_000)["id"]
        for i in range(0, held, 500):
            batch = [{"role": "user", "content": f"held message {i + j}"} for j in range(min(500, held - i))]
            c.append_many(sid, batch)
        for _ in range(100):
            c.append(sid, "user", "warm")
        ctx = c.context(sid)
        assert ctx["active_messages"] == held + 100 and ctx["compacted_messages"] == 0, ctx
        return cpu_per_append(d, c, sid, APPENDS)
    finally:
        d.__exit__(None, None, None)


if __name__ == "__main__":
    print(json.dumps(alternated(CASES, BASE, ROUNDS, _one, APPENDS), indent=2))
