"""kill -9 of either device at random moments while both append to a shared session whose context fills (a
budget, so appends compact the chat first) and A compacts it now and then (`compact`, `uncompact` once in a
while) and syncs: after the restarts every acknowledged message is on both devices once, in one order, both
show the chat compacted up to the same message with the same active context, and verify and doctor are clean
on both. CRASH_KILLS sets how many kills."""

from __future__ import annotations

import os

from conftest import wait_for
from killing import calls, converge, killed_while
from sessiond.client import Client

KILLS = int(os.environ.get("CRASH_KILLS", 8))


def _context(d, sid: str) -> tuple:
    with Client(d.home) as c:
        ctx = c.context(sid)
        return ctx.get("compacted_upto"), ctx.get("active_messages"), ctx.get("active_tokens")


def test_compactions_of_a_shared_session_killed_at_random_moments_converge(make_daemon, store_dir):
    url = f"file://{store_dir}"
    a, b = make_daemon(url).start(), make_daemon(url).start()
    ca = a.client()
    sid = ca.create_session(name="filling", max_context_tokens=400)["id"]
    ca.append_many(sid, [{"role": "user", "content": f"pre{i}", "tokens": 10} for i in range(20)])
    b.client().import_code(ca.share(sid, write=True)["code"])
    acked: list[str] = [f"pre{i}" for i in range(20)]
    errors: list[BaseException] = []

    def append(c: Client, i: int) -> None:
        c.append(sid, "user", f"b{i}", tokens=25)
        acked.append(f"b{i}")

    def compact(c: Client, i: int) -> None:
        if i % 9 == 0:
            c.uncompact(sid)
        elif i % 3 == 0:
            c.compact(sid, target_tokens=50 + 10 * (i % 7))
        c.append(sid, "user", f"a{i}", tokens=25)
        acked.append(f"a{i}")
        if i % 4 == 0:
            c.sync(sid, wait=True, timeout=10)

    killed_while(
        [
            lambda stop: calls(b.home, append, stop, errors, timeout=20),
            lambda stop: calls(a.home, compact, stop, errors),
        ],
        [a, b],
        KILLS,
    )
    assert not errors, errors
    assert len(acked) > 40

    converge([a, b], sid, acked)
    wait_for(lambda: _context(a, sid) == _context(b, sid), timeout=30, what="the same active context on both")
    assert _context(a, sid)[0] is not None  # the context filled: compacted


def test_compactions_on_both_writers_killed_at_random_moments_converge(make_daemon, store_dir):
    """Both devices compact, uncompact and append: after the kills both show the same active context."""
    url = f"file://{store_dir}"
    a, b = make_daemon(url).start(), make_daemon(url).start()
    ca = a.client()
    sid = ca.create_session(name="filling twice", max_context_tokens=400)["id"]
    ca.append_many(sid, [{"role": "user", "content": f"pre{i}", "tokens": 10} for i in range(20)])
    b.client().import_code(ca.share(sid, write=True)["code"])
    acked: list[str] = [f"pre{i}" for i in range(20)]
    errors: list[BaseException] = []

    def worker(name: str):
        def work(c: Client, i: int) -> None:
            if i % 7 == 0:
                c.uncompact(sid)
            elif i % 3 == 0:
                c.compact(sid, target_tokens=40 + 10 * (i % 5))
            c.append(sid, "user", f"{name}{i}", tokens=25)
            acked.append(f"{name}{i}")
            if i % 4 == 0:
                c.sync(sid, wait=True, timeout=10)

        return work

    killed_while(
        [lambda stop, d=d, n=n: calls(d.home, worker(n), stop, errors, timeout=20) for d, n in ((a, "a"), (b, "b"))],
        [a, b],
        KILLS,
    )
    assert not errors, errors
    converge([a, b], sid, acked)

    def same() -> bool:
        for d in (a, b):
            d.client().sync(sid, wait=True, timeout=10)
        return _context(a, sid) == _context(b, sid)

    wait_for(same, timeout=30, what="the same active context on both")
