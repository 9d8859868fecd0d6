"""kill -9 at random moments of either device, or of the relay they share a session through (the relay's host
going down, and coming back on its address), while both devices append and sync: after the restarts every
acknowledged message is on both devices once, in one order, and verify and doctor are clean on both.
CRASH_KILLS sets how many kills."""

from __future__ import annotations

import os

from killing import RelayProc, appender, converge, killed_while, progressing, shared_writers

KILLS = int(os.environ.get("CRASH_KILLS", 8))


def test_a_shared_session_on_a_relay_killed_at_random_moments_converges_whole(make_daemon, tmp_path, reserved_port):
    relay = RelayProc(str(tmp_path / "relay"), reserved_port.port).start()
    try:
        a, b, sid = shared_writers(make_daemon, relay.url, "relayed")
        acked: list[str] = ["first"]
        errors: list[BaseException] = []

        workers = [appender(a, sid, "a", acked, errors), appender(b, sid, "b", acked, errors)]
        killed_while(workers, [a, b, relay], KILLS, lo=0.1, hi=0.6, between=progressing(acked, errors))
        assert not errors, errors
        assert len(acked) >= 1 + KILLS  # one acknowledged a kill at least (however slow the machine)
        converge([a, b], sid, acked, timeout=60)
    finally:
        relay.stop()
