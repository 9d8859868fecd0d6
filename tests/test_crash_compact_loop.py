"""kill -9 of either device at random moments while both append to a shared session whose context fills (a
budget, so appends compact the chat first) and A compacts it now and then (`compact`, `uncompact` once in a
while) and syncs: after the restarts every acknowledged message is on both devices once, in one order, both
show the chat compacted up to the same message with the same active context, and verify and doctor are clean
on both. CRASH_KILLS sets how many kills."""

from __future__ import annotations

import os

from killing import agreeing, calls, converge, each_writing, killed_while, progressing, shared_writers
from sessiond.client import Client

KILLS = int(os.environ.get("CRASH_KILLS", 8))
PRE = [{"role": "user", "content": f"pre{i}", "tokens": 10} for i in range(20)]


def _context(d, sid: str) -> tuple:
    with Client(d.home) as c:
        ctx = c.context(sid)
        return ctx.get("compacted_upto"), ctx.get("active_messages"), ctx.get("active_tokens")


def compacting(sid: str, acked: list[str]):
    """The work of a device `name` that compacts: `name`1, `name`2, ... appended to `sid` (each acknowledged one
    noted in `acked`), a compaction before every third (an uncompact before every ninth), a sync every fourth."""

    def worker(name: str):
        def work(c: Client, i: int) -> None:
            if i % 9 == 0:
                c.uncompact(sid)
            elif i % 3 == 0:
                c.compact(sid, target_tokens=40 + 10 * (i % 7))
            c.append(sid, "user", f"{name}{i}", tokens=25)
            acked.append(f"{name}{i}")
            if i % 4 == 0:
                c.sync(sid, wait=True, timeout=10)

        return work

    return worker


def test_compactions_of_a_shared_session_killed_at_random_moments_converge(make_daemon, store_dir):
    a, b, sid = shared_writers(make_daemon, f"file://{store_dir}", "filling", PRE, max_context_tokens=400)
    acked: list[str] = [f"pre{i}" for i in range(20)]
    errors: list[BaseException] = []

    def append(c: Client, i: int) -> None:
        c.append(sid, "user", f"b{i}", tokens=25)
        acked.append(f"b{i}")

    killed_while(
        [
            lambda stop: calls(b.home, append, stop, errors, timeout=20),
            lambda stop: calls(a.home, compacting(sid, acked)("a"), stop, errors),
        ],
        [a, b],
        KILLS,
        between=progressing(acked, errors),
    )
    assert not errors, errors
    assert len(acked) >= len(PRE) + KILLS  # one acknowledged a kill at least (however slow the machine)

    converge([a, b], sid, acked)
    agreeing([a, b], sid, _context, "the same active context on both")
    assert _context(a, sid)[0] is not None  # the context filled: compacted


def test_compactions_on_both_writers_killed_at_random_moments_converge(make_daemon, store_dir):
    """Both devices compact, uncompact and append: after the kills both show the same active context."""
    a, b, sid = shared_writers(make_daemon, f"file://{store_dir}", "filling twice", PRE, max_context_tokens=400)
    acked: list[str] = [f"pre{i}" for i in range(20)]
    errors: list[BaseException] = []

    each_writing({"a": a, "b": b}, compacting(sid, acked), errors, KILLS)
    assert not errors, errors
    converge([a, b], sid, acked)
    agreeing([a, b], sid, _context, "the same active context on both")
