"""Importing a long session by share code (issue 14, bug 3): the import takes the single SQLite writer in
short turns, so appends to other sessions go on meanwhile; it stays all-or-nothing for every reader, and
a daemon killed in the middle of it leaves nothing half-imported behind."""

from __future__ import annotations

import os
import sqlite3
import threading
import time

import pytest

from conftest import appends_meanwhile, wait_for
from sessiond.client import ApiError

CONTENT = "a message of a typical length, with a few words of text in it"


def _shared(make_daemon, store_dir, n: int, env_b: dict | None = None):
    """Daemon A with an `n`-message session shared (read-only) by code, and daemon B on the same store."""
    url = "file://" + store_dir
    a = make_daemon(url).start()
    b = make_daemon(url, env=env_b).start()
    ca = a.client()
    sid = ca.create_session(name="big")["id"]
    for i in range(0, n, 10_000):
        ca.append_many(sid, [{"role": "user", "content": f"{j} {CONTENT}"} for j in range(i, min(n, i + 10_000))])
    code = ca.share(sid)["code"]
    return a, b, sid, code


def _absent(client, sid: str) -> bool:
    try:
        client.get_session(sid)
    except ApiError as exc:
        assert exc.status == 404, exc
        return True
    return False


def test_appends_go_on_while_a_long_session_is_imported(make_daemon, store_dir):
    """B imports a 100,000-message session while one client appends to another session of B's and
    another reads B's sessions over and over. The appends are never held up for long (before: every
    append waited for the whole import, ~1.6 s in one write transaction), and no reader ever sees the
    imported session partly there: it is absent, or there with every message."""
    n = 100_000
    a, b, sid, code = _shared(make_daemon, store_dir, n)
    cb = b.client()
    local = cb.create_session(name="local")["id"]
    seen: list[tuple] = []
    stop = threading.Event()

    def reader():
        with b.client() as c:
            while not stop.is_set():
                t = time.monotonic()
                listed = [s["id"] for s in c.list_sessions(limit=100)["sessions"]]
                counts = c.status()["counts"]
                try:
                    got = c.get_session(sid)
                except ApiError as exc:
                    assert exc.status == 404, exc
                    got = None
                seen.append((sid in listed, counts["sessions"], got and got["message_count"], t))

    th = threading.Thread(target=reader)
    th.start()
    try:
        with appends_meanwhile(b, local) as spans:
            wait_for(lambda: len(spans) >= 5 and len(seen) >= 2)
            t0 = time.monotonic()
            assert cb.import_code(code)["new"] > n  # the messages and the session's operations
            t1 = time.monotonic()
            wait_for(lambda: seen[-1][3] > t1, what="reads after the import")
    finally:
        stop.set()
        th.join(timeout=60)
    during = sorted(end - start for start, end in spans if end > t0 and start < t1)
    assert len(during) >= 10, f"only {len(during)} appends during a {t1 - t0:.2f} s import"
    p99 = during[min(len(during) - 1, int(len(during) * 0.99))]
    # (before: p99 1.2-1.6 s, the whole import; after: 80-220 ms on 2 shared cores, a write transaction
    # takes at most 65 ms, the rest is the import's own work on the daemon's event loop). A machine loaded by
    # other work slows the import and the appends alike: the bound grows with the import's length (an append held
    # for the whole import is still over it), not a fixed wall time a loaded machine misses.
    bound = max(0.7, 0.4 * (t1 - t0))
    assert p99 < bound, (
        f"appends during a {t1 - t0:.2f} s import: p99 {p99 * 1000:.0f} ms (over {bound * 1000:.0f} ms),"
        f" max {during[-1] * 1000:.0f} ms"
    )
    # each read saw the session absent, or there with all its messages, and once there, it stayed
    assert sum(t0 < r[3] < t1 for r in seen) >= 3, "too few reads during the import"
    listed, sessions, counts, _ = zip(*seen)
    assert sorted(listed) == list(listed) and listed[-1], listed
    assert sorted(sessions) == list(sessions) and set(sessions) == {1, 2}, sessions
    assert counts[-1] == n and all(c in (None, n) for c in counts), sorted(set(counts), key=str)
    assert counts.index(n) == len(counts) - counts.count(n)
    assert cb.get_session(sid)["message_count"] == n


def test_an_import_killed_midway_leaves_nothing_and_runs_again(make_daemon, store_dir):
    """B dies (as under kill -9) after the first batch of a long import is committed: after a restart
    the session is not there, none of its rows are left, and importing the code again succeeds."""
    n = 10_000  # five write transactions of messages
    a, b, sid, code = _shared(make_daemon, store_dir, n, env_b={"SESSIOND_CRASH_AT": "import.chunk"})
    cb = b.client()
    with pytest.raises(Exception):  # noqa: B017 (the daemon is gone: whatever the connection raises)
        cb.import_code(code)
    b.proc.wait(timeout=15)
    db = sqlite3.connect(os.path.join(b.home, "sessions.db"))
    try:  # the crash did leave a part behind, hidden
        assert db.execute("SELECT importing FROM sessions WHERE id=?", (sid,)).fetchall() == [(1,)]
        assert 0 < db.execute("SELECT count(*) FROM messages WHERE session_id=?", (sid,)).fetchone()[0] < n
    finally:
        db.close()
    b.kill()
    b.env.pop("SESSIOND_CRASH_AT")
    b.start()
    assert _absent(cb, sid)
    assert cb.status()["counts"]["messages"] == 0 and cb.list_sessions()["sessions"] == []
    db = sqlite3.connect(os.path.join(b.home, "sessions.db"))
    try:
        for table in ("sessions", "messages", "ops", "chats"):
            assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
    finally:
        db.close()
    assert cb.import_code(code)["new"] > n
    assert cb.get_session(sid)["message_count"] == n
