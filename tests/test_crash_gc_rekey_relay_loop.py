"""kill -9 at random moments of either writer or of the relay they share a session through, while both append (a
sync now and then), A rekeys the session again and again and both run `gc --grace 0` again and again (a relay frees
what a device lets go through its API: sync/gc.py): after the restarts the writers converge on every acknowledged
message once, in one order, under one key; `sync --wait`, verify and doctor are clean on both, and nothing the
devices need was freed: a device importing a fresh code reads every message, after one more gc on each too.
tests/test_crash_gc_rekey_loop.py is the same over a folder store. CRASH_KILLS sets how many kills; the long version
(CRASH_LONG=1) makes more of them, each round a new seed (CRASH_SEED, then the next ones)."""

from __future__ import annotations

import os

import pytest

from conftest import cli_json, wait_for
from killing import (
    RelayProc,
    calls,
    contents,
    converge,
    killed_while,
    progressing,
    rekeying,
    session_key,
    shared_writers,
)
from sessiond.client import Client

LONG = bool(os.environ.get("CRASH_LONG"))
KILLS = int(os.environ.get("CRASH_KILLS", 20 if LONG else 5))
ROUNDS = 3 if LONG else 1
SEED = int(os.environ.get("CRASH_SEED", "1"))


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_gc_rekeys_and_appends_over_a_relay_killed_at_random_moments_free_nothing_a_device_needs(
    make_daemon, tmp_path, reserved_port, monkeypatch, round_
):
    monkeypatch.setenv("CRASH_SEED", str(SEED + round_))
    relay = RelayProc(str(tmp_path / "relay"), reserved_port.port).start()
    try:
        a, b, sid = shared_writers(make_daemon, relay.url, "collected")
        first_key = session_key(a, sid)
        acked: list[str] = ["first"]
        rekeyed: list[int] = []
        errors: list[BaseException] = []

        def batches(name: str, d):  # one to three messages an append, a sync now and then
            def append(c: Client, i: int) -> None:
                c.append_many(sid, [{"role": "user", "content": f"{name}{i}.{j}"} for j in range(1 + i % 3)])
                acked.extend(f"{name}{i}.{j}" for j in range(1 + i % 3))
                if i % 4 == 0:
                    c.sync(sid, wait=True, timeout=10)

            return lambda stop: calls(d.home, append, stop, errors, timeout=20)

        def collect(c: Client, i: int) -> None:
            c.gc(grace=0)

        then = progressing(acked, errors)

        def between(k, rnd) -> None:  # (the kills as the appends go on; half of them once a rekey was answered)
            then(k, rnd)
            if k == KILLS // 2:
                wait_for(lambda: bool(rekeyed) or bool(errors), timeout=30, what="a rekey answered")

        killed_while(
            [
                batches("a", a),
                batches("b", b),
                lambda stop: calls(a.home, rekeying(sid, rekeyed), stop, errors, timeout=20),
                lambda stop: calls(a.home, collect, stop, errors, timeout=20),
                lambda stop: calls(b.home, collect, stop, errors, timeout=20),
            ],
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
        c = make_daemon(relay.url).start()
        c.client().import_code(a.client().share(sid)["code"])
        assert contents(c, sid) == log
        for d in (a, b):
            cli_json(d.home, "gc", "--grace", "0")  # and once more, all quiet
        d = make_daemon(relay.url).start()
        d.client().import_code(b.client().share(sid)["code"])
        assert contents(d, sid) == log
        assert cli_json(d.home, "verify")["ok"]
    finally:
        relay.stop()
