"""kill -9 of A or B at random moments while three devices append to one session, A drops C from it
(`rekey --drop C`), and then A and B rekey it again (plain `rekey`, several times, each retried through the kills
until answered): A and B end with the same messages, C's writes from before the drop among them once (carried over
in the frozen log the drop named, from one members slot to the next), under one key; C learns it was revoked.
A kept writer (B) that pulled what C wrote past the drop's freeze, taking the drop once the next rekey's notice was
in the drop's new slot, freezes C's log as it read it for that slot: nothing was written there then (nor noted),
and the next generation's slot went on without it: A never got those messages, B kept them (test_sync_races.py).
CRASH_KILLS sets how many kills; KEEP_HOMES=DIR keeps the homes of a run that fails."""

from __future__ import annotations

import os
import threading

from conftest import wait_for
from killing import (
    appender,
    converge,
    dropped_writer_told,
    keep_homes,
    killed_while,
    session_key,
    three_writers,
    waiting_for,
    writer_until_revoked,
)
from sessiond.client import ApiError, Client, ClientError

KILLS = int(os.environ.get("CRASH_KILLS", 7))
REKEYS = 3


def test_rekeys_after_a_drop_while_a_and_b_are_killed_at_random_moments_converge(make_daemon, store_dir):
    a, b, c, sid, c_id = three_writers(make_daemon, f"file://{store_dir}")
    acked: list[str] = ["first"]
    by_c: list[str] = []
    errors: list[BaseException] = []
    revoked = threading.Event()
    dropped = threading.Event()
    started = threading.Event()

    def rekey_once(d, stop: threading.Event, **kw) -> bool:
        while not stop.is_set():
            try:
                with Client(d.home, timeout=20) as cl:
                    cl.rekey(sid, **kw)
                    return True
            except ApiError as exc:
                if exc.code in ("conflict", "busy"):  # another's rekey came first: taken at a pull, asked again
                    stop.wait(0.05)
                    continue
                errors.append(exc)
                return False
            except (ClientError, OSError):
                stop.wait(0.02)
        return False

    def work(stop: threading.Event) -> None:  # the drop, then plain rekeys by A or B
        wait_for(lambda: len(by_c) >= 5 or stop.is_set(), timeout=20, what="C's first writes")
        started.set()
        if not rekey_once(a, stop, drop=[c_id]):
            return
        dropped.set()
        for i in range(REKEYS):
            d = (a, b)[i % 2]
            if not rekey_once(d, stop):
                return

    killed_while(
        [
            appender(a, sid, "a", acked, errors),
            appender(b, sid, "b", acked, errors),
            writer_until_revoked(c, sid, "c", by_c, errors, revoked),
            work,
        ],
        [a, b],
        KILLS,
        lo=0.2,
        hi=0.6,
        between=waiting_for(started.is_set, "the drop asked", KILLS // 2),
    )
    assert not errors, errors
    if not dropped.is_set():
        assert rekey_once(a, threading.Event(), drop=[c_id])
    try:
        log = converge([a, b], sid, acked)
        assert session_key(a, sid) == session_key(b, sid)
    except AssertionError:
        keep_homes(store_dir, a, b, c)
        raise

    dropped_writer_told(c, sid, by_c, log)
