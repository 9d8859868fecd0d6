"""kill -9 of either writer at random moments while both append and BOTH rekey the session again and again
(racing rekeys: the first notice in the old members slot wins, the other gives way, a 409 conflict, and its
device takes the winner's; a rekey cut short is resumed from its record): after the restarts the writers
converge on every acknowledged message once, in one order, under one key, and verify and doctor are clean on
both. One writer rekeying alone: tests/test_crash_rekey_loop.py. CRASH_KILLS sets how many kills."""

from __future__ import annotations

import os
import time

from killing import appender, calls, converge, killed_while, session_key, shared_writers, waiting_for
from sessiond.client import ApiError

KILLS = int(os.environ.get("CRASH_KILLS", 7))
# rekeys answered per device: under the 16 claims a device's log keeps (sync/manifest.py CLAIMS_KEPT), past which a
# device away through that many rekeys by one device is told to import a new share code (was: unbounded, and under
# a loaded machine one device, killed a while, fell more than 16 rekeys behind the other: 1 run in 6 with CPU hogs)
REKEYS_EACH = 8


def test_racing_rekeys_on_both_writers_killed_at_random_moments_converge_under_one_key(make_daemon, store_dir):
    url = f"file://{store_dir}"
    a, b, sid = shared_writers(make_daemon, url, "rekeyed twice")
    acked: list[str] = ["first"]
    first_key = session_key(a, sid)
    rekeyed: list[str] = []
    lost: list[str] = []  # rekeys refused: the other device's came first
    errors: list[BaseException] = []

    def rekeyer(name: str, d):
        def rekey(c, i: int) -> None:
            if sum(r.startswith(name) for r in rekeyed) >= REKEYS_EACH:
                time.sleep(0.05)  # (enough rekeys by this device: the loop goes on appending and killing)
                return
            try:
                c.rekey(sid)
                rekeyed.append(f"{name}{i}")
            except ApiError as exc:  # the other device's rekey came first: the documented answer
                if exc.code != "conflict":
                    raise
                lost.append(f"{name}{i}")
                c.sync(sid, wait=True, timeout=10)  # take its key, then rekey again

        return lambda stop: calls(d.home, rekey, stop, errors, timeout=20)

    killed_while(
        [appender(a, sid, "a", acked, errors), appender(b, sid, "b", acked, errors), rekeyer("a", a), rekeyer("b", b)],
        [a, b],
        KILLS,
        lo=0.1,
        hi=0.5,
        between=waiting_for(lambda: bool(rekeyed), "a rekey answered", KILLS // 2),
    )
    assert not errors, errors
    converge([a, b], sid, acked)
    keys = [session_key(d, sid) for d in (a, b)]
    assert keys[0] == keys[1] != first_key  # one key: the rekey that won
