"""kill -9 of either writer at random moments while both append and one rekeys the session again and again,
both devices on a mirror of two folder stores (each push and rekey written to both): after the restarts the
writers converge on every acknowledged message once, in one order, under one key; verify (each store of the
mirror checked on its own) and doctor are clean on both, and a device importing a fresh code from the mirror's
second store alone holds every message. CRASH_KILLS sets how many kills."""

from __future__ import annotations

import os

from killing import (
    appender,
    calls,
    contents,
    converge,
    killed_while,
    rekeying,
    session_key,
    shared_writers,
    waiting_for,
)

KILLS = int(os.environ.get("CRASH_KILLS", 7))


def test_rekeys_and_appends_on_a_mirror_killed_at_random_moments_converge_in_both_stores(
    make_daemon, store_dir, tmp_path
):
    stores = [f"file://{store_dir}", f"file://{tmp_path / 'second'}"]
    a, b, sid = shared_writers(make_daemon, stores, "mirrored")
    acked: list[str] = ["first"]
    first_key = session_key(a, sid)
    rekeyed: list[int] = []
    errors: list[BaseException] = []

    killed_while(
        [
            appender(a, sid, "a", acked, errors),
            appender(b, sid, "b", acked, errors),
            lambda stop: calls(b.home, rekeying(sid, rekeyed), stop, errors, timeout=20),  # (killing.REKEYS at most)
        ],
        [a, b],
        KILLS,
        lo=0.1,
        hi=0.5,
        between=waiting_for(lambda: bool(rekeyed), "a rekey answered", KILLS // 2),
    )
    assert not errors, errors
    log = converge([a, b], sid, acked)
    keys = [session_key(d, sid) for d in (a, b)]
    assert keys[0] == keys[1] != first_key
    c = make_daemon(stores[1]).start()  # the second store alone, every page read from it
    c.client().import_code(b.client().share(sid)["code"])
    assert contents(c, sid) == log
