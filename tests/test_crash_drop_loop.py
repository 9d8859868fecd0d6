"""kill -9 of A or B at random moments while three devices append to one session and A drops C from it
(`rekey --drop C`, retried through the kills until answered): C learns it was revoked, every message A and B
acknowledged is on both once, in one order, under one key, and each of C's acknowledged writes reached A and B
or is counted as held on C alone (`show`'s `held_here`); verify and doctor are clean on A and B.
CRASH_KILLS sets how many kills."""

from __future__ import annotations

import os
import threading

from conftest import wait_for
from killing import (
    calls,
    converge,
    dropped_writer_told,
    killed_while,
    session_key,
    three_writers,
    waiting_for,
    writer_until_revoked,
)
from sessiond.client import ApiError, Client, ClientError

KILLS = int(os.environ.get("CRASH_KILLS", 7))


def test_a_drop_of_a_third_device_while_a_and_b_are_killed_at_random_moments_converges(make_daemon, store_dir):
    a, b, c, sid, c_id = three_writers(make_daemon, f"file://{store_dir}")
    acked: list[str] = ["first"]
    by_c: list[str] = []
    errors: list[BaseException] = []
    revoked = threading.Event()
    dropped = threading.Event()
    started = threading.Event()  # the drop asked (so that later kills may cut it)

    def appender(name: str, d):
        def append(cl, i: int) -> None:
            cl.append(sid, "user", f"{name}{i}")
            acked.append(f"{name}{i}")

        return lambda stop: calls(d.home, append, stop, errors, timeout=20)

    def drop(stop: threading.Event) -> None:  # after C wrote some: A drops it, again after a kill until answered
        wait_for(lambda: len(by_c) >= 5 or stop.is_set(), timeout=20, what="C's first writes")
        while not stop.is_set() and not dropped.is_set():
            try:
                with Client(a.home, timeout=20) as cl:
                    started.set()
                    cl.rekey(sid, drop=[c_id])
                    dropped.set()
            except ApiError as exc:  # (asked again, a drop a kill cut short, finished from its record, answers as the
                # drop: C named dropped already, not refused as no writer: tests/test_rekey_drop_retry.py)
                errors.append(exc)
                return
            except (ClientError, OSError):
                stop.wait(0.02)

    killed_while(
        [appender("a", a), appender("b", b), writer_until_revoked(c, sid, "c", by_c, errors, revoked), drop],
        [a, b],
        KILLS,
        lo=0.2,
        hi=0.6,
        between=waiting_for(started.is_set, "the drop asked", KILLS // 2),
    )
    assert not errors, errors
    if not dropped.is_set():  # asked, its answer cut by the last kill: asked again, with no kill now
        drop(threading.Event())
    assert dropped.is_set(), "the drop was never answered"

    log = converge([a, b], sid, acked)
    assert session_key(a, sid) == session_key(b, sid)

    dropped_writer_told(c, sid, by_c, log)
