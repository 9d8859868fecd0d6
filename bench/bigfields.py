"""What a session's big texts cost an append: the daemon's CPU per append (user + system, from /proc) over the
append stream, one client, one session whose system prompt is none, 50 KB, 500 KB or 8 MB (8 << 20 characters,
the most a message's content may hold), and two more: a chat of its own with an 8 MB prompt, appended to, and
the session's metadata at its cap (1 MiB). Prints JSON; run:
    python bench/bigfields.py > bench/results/bigfields.json

Schema migration 21 took a session's system prompt and initial messages, and a chat's system prompt, out of the
rows an append reads and rewrites (storage/schema.py): before it, the append's read walked the prompt's
overflow pages and its UPDATE of the session's clock rebuilt the whole record. BIGFIELDS_BASE: a folder whose
`sessiond` is another version's code (e.g. `git archive main` unpacked into BASE/sessiond): each case runs on it
too, alternated with this checkout's, round by round, so that both meet the same moments of a shared VM.
Best and median of BIGFIELDS_ROUNDS rounds (3) of BIGFIELDS_APPENDS appends (1,500), after 100 to warm up;
BIGFIELDS_CASES: some of the cases, by name, comma-separated.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _util import alternated, cpu_per_append, daemon_on

from sessiond.client import Client

ROUNDS = int(os.environ.get("BIGFIELDS_ROUNDS", 3))
APPENDS = int(os.environ.get("BIGFIELDS_APPENDS", 1500))
BASE = os.environ.get("BIGFIELDS_BASE")
CONFIG = "push_delay = 3600\nsync_interval = 3600\n"  # the append path alone: the sync worker held back
KB = 1000
CASES = {
    "no_prompt": {},
    "prompt_50KB": {"system_prompt": 50 * KB},
    "prompt_500KB": {"system_prompt": 500 * KB},
    "prompt_8MB": {"system_prompt": 8 << 20},
    "chat_prompt_8MB": {"chat_prompt": 8 << 20},
    "metadata_1MiB": {"metadata": (1 << 20) - 64},
}
if os.environ.get("BIGFIELDS_CASES"):  # some of them, by name, comma-separated
    CASES = {k: CASES[k] for k in os.environ["BIGFIELDS_CASES"].split(",")}


def _text(n: int) -> str:
    return ("a pasted document, line after line. " * (n // 36 + 1))[:n]


def _one(case: dict, code: str | None) -> float:
    """The daemon's CPU per append (us) for one round of `case`, on this checkout's code or `code`'s."""
    d = daemon_on(CONFIG, code)
    try:
        c = Client(d.home, append_stream=True)
        spec: dict = {"name": "bench"}
        if "system_prompt" in case:
            spec["system_prompt"] = _text(case["system_prompt"])
        if "metadata" in case:
            spec["metadata"] = {"doc": _text(case["metadata"])}
        sid = c.create_session(**spec)["id"]
        chat = None
        if "chat_prompt" in case:
            chat = c.create_chat(sid, id="side", name="side", system_prompt=_text(case["chat_prompt"]))["id"]
        extra = {"chat": chat} if chat else {}
        for _ in range(100):
            c.append(sid, "user", "warm", **extra)
        return cpu_per_append(d, c, sid, APPENDS, **extra)
    finally:
        d.__exit__(None, None, None)


def main() -> None:
    print(json.dumps(alternated(CASES, BASE, ROUNDS, _one, APPENDS), indent=2))


if __name__ == "__main__":
    main()
