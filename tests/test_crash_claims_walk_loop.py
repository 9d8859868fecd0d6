"""kill -9 at random moments of a device catching up through more rekeys by one device than that device's manifest
keeps claims of (CLAIMS_KEPT), so that each pull's check of the first notices walks down the author's older
manifests for its claim (sync/rekeywalk.py), many of them (the author pushed again and again between its rekeys),
while both append. B, away through them, is started and killed again and again (A too, now and then) as it takes the
chain; after the restarts both converge on every acknowledged message once, in one order, under one key; `sync
--wait`, verify and doctor are clean on both, and a device importing a fresh code holds every message. CRASH_KILLS
sets how many kills; the long version (CRASH_LONG=1) makes more rekeys, pushes between them and kills, each round a
new seed (CRASH_SEED, then the next ones), and runs over a relay too, with so many manifests between the rekeys that
a walk outlasts its bound a pull (rekeywalk.WALK_SECONDS: cut, the next pull goes on with it)."""

from __future__ import annotations

import pytest

from conftest import wait_for
from killing import (
    LONG,
    RelayProc,
    appender,
    contents,
    converge,
    keep_homes,
    killed_while,
    kills,
    progressing,
    seeded_rounds,
    session_key,
    shared_writers,
)
from sessiond.sync.manifest import CLAIMS_KEPT

KILLS = kills(5, 16)
REKEYS = CLAIMS_KEPT + (8 if LONG else 2)  # past what A's manifest keeps claims of: the first ones walked for
PUSHES = 6 if LONG else 3  # A's pushes between two rekeys: the manifests a walk reads
RELAY_PUSHES = 30  # (over a relay, the long version: some 700 manifests, a walk of more than a pull's bound)


@seeded_rounds(3)
def test_a_device_catching_up_past_the_claims_kept_killed_at_random_moments_converges(
    make_daemon, store_dir, monkeypatch, seed
):
    monkeypatch.setenv("CRASH_SEED", str(seed))
    caught_up_killed(make_daemon, f"file://{store_dir}", store_dir, PUSHES)


@pytest.mark.skipif(not LONG, reason="the long version: CRASH_LONG=1")
@pytest.mark.timeout(1200)  # (some 700 pushes made first, over HTTP: minutes)
def test_a_device_catching_up_past_the_claims_kept_on_a_relay_killed_at_random_moments_converges(
    make_daemon, tmp_path, reserved_port
):
    relay = RelayProc(str(tmp_path / "relay"), reserved_port.port).start()
    try:
        caught_up_killed(make_daemon, relay.url, str(tmp_path / "relay"), RELAY_PUSHES)
    finally:
        relay.stop()


def caught_up_killed(make_daemon, url: str, store_dir: str, pushes: int) -> None:
    """A and B writers on the store at `url`; B away through REKEYS rekeys by A, `pushes` pushes of A's after each;
    B started and killed (A too) at random moments as both append; then both converge, and a new device holds all."""
    a, b, sid = shared_writers(make_daemon, url, "walked")
    acked: list[str] = ["first"]
    with b.client() as cb:
        cb.append(sid, "user", "b joins")  # (B a writer A knows)
    acked.append("b joins")
    assert b.client().sync(sid, wait=True, timeout=30)["complete"]
    wait_for(lambda: a.client().sync(sid, wait=True, timeout=10) and "b joins" in contents(a, sid), timeout=30)
    b.stop()  # away through A's rekeys
    with a.client() as ca:
        for r in range(REKEYS):
            ca.rekey(sid)
            for p in range(pushes):
                ca.append(sid, "user", f"r{r}.{p}")
                acked.append(f"r{r}.{p}")
                ca.sync(sid, wait=True, timeout=10)
    b.start()
    errors: list[BaseException] = []
    killed_while(
        [appender(a, sid, "a", acked, errors), appender(b, sid, "b", acked, errors)],
        [b, b, a],  # (B, catching up, the victim most often)
        KILLS,
        lo=0.1,
        hi=0.8,
        between=progressing(acked, errors),
    )
    assert not errors, errors
    try:
        converge([a, b], sid, acked, timeout=90)
    finally:
        keep_homes(store_dir, a, b)
    assert session_key(a, sid) == session_key(b, sid)  # (B took the whole chain)
    d = make_daemon(url).start()
    d.client().import_code(a.client().share(sid)["code"])
    wait_for(lambda: set(acked) <= set(contents(d, sid)), timeout=30, what="D holds every message")
