"""kill -9 at random moments of either writer or of the relay they share a session through, while both append (a
sync now and then), A rekeys the session again and again and both run `gc --grace 0` again and again (a relay frees
what a device lets go through its API: sync/gc.py): after the restarts the writers converge on every acknowledged
message once, in one order, under one key; `sync --wait`, verify and doctor are clean on both, and nothing the
devices need was freed: a device importing a fresh code reads every message, after one more gc on each too.
tests/test_crash_gc_rekey_loop.py is the same over a folder store. CRASH_KILLS sets how many kills; the long version
(CRASH_LONG=1) makes more of them, each round a new seed (CRASH_SEED, then the next ones)."""

from __future__ import annotations

from conftest import wait_for
from killing import (
    RelayProc,
    converge,
    killed_while,
    kills,
    progressing,
    seeded_rounds,
    session_key,
    shared_writers,
)
from test_crash_gc_rekey_loop import collecting, nothing_freed

KILLS = kills(5, 20)


@seeded_rounds(3)
def test_gc_rekeys_and_appends_over_a_relay_killed_at_random_moments_free_nothing_a_device_needs(
    make_daemon, tmp_path, reserved_port, monkeypatch, seed
):
    monkeypatch.setenv("CRASH_SEED", str(seed))
    relay = RelayProc(str(tmp_path / "relay"), reserved_port.port).start()
    try:
        a, b, sid = shared_writers(make_daemon, relay.url, "collected")
        first_key = session_key(a, sid)
        acked: list[str] = ["first"]
        rekeyed: list[int] = []
        errors: list[BaseException] = []

        then = progressing(acked, errors)

        def between(k, rnd) -> None:  # (the kills as the appends go on; half of them once a rekey was answered)
            then(k, rnd)
            if k == KILLS // 2:
                wait_for(lambda: bool(rekeyed) or bool(errors), timeout=30, what="a rekey answered")

        killed_while(
            collecting(a, b, sid, acked, rekeyed, errors, store_killed=True),
            [a, b, relay],
            KILLS,
            lo=0.1,
            hi=0.5,
            between=between,
        )
        assert not errors, errors
        assert len(acked) >= 1 + KILLS  # one acknowledged a kill at least (however slow the machine)
        log = converge([a, b], sid, acked, timeout=60)
        assert session_key(a, sid) == session_key(b, sid) != first_key
        nothing_freed(make_daemon, relay.url, a, b, sid, log)
    finally:
        relay.stop()
