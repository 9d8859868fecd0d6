"""kill -9 of either writer at random moments while both append and sync on a mirror of two folder stores, and the
mirror's second store loses the writers' logs and the session's members slot again and again (their head files gone:
a host restored from a backup), so that the devices' repairs (sync/lostlog.py: a sync's check, a pull's; a slot
restored: sync/slotrestore.py) write them there again as the kills cut them: after the restarts, the losses
stopped, the writers converge on every acknowledged message once, in one order; `sync --wait`, verify (each store of
the mirror checked on its own) and doctor are clean on both, and a device importing a fresh code from the second
store alone holds every message. CRASH_KILLS sets how many kills; the long version (CRASH_LONG=1) makes more of
them, each round a new seed (CRASH_SEED, then the next ones)."""

from __future__ import annotations

import os
import random
import threading

from conftest import wait_for
from killing import (
    appender,
    calls,
    contents,
    converge,
    keep_homes,
    killed_while,
    kills,
    progressing,
    seeded_rounds,
    shared_writers,
)
from sessiond.client import Client
from sessiond.sync.keys import KeyStore

KILLS = kills(5, 24)


def _log_heads(sid: str, *devices) -> list[str]:
    """The file names of the devices' log heads of `sid` in a folder store."""
    return [KeyStore(os.path.join(d.home, "keys")).head_pk(sid).hex() for d in devices]


def _losing(second: str, names: list[str], lost: list[int], rnd: random.Random):
    """A worker for killed_while: of the second store's log heads `names` and its members slots, one or all removed
    every 0.1 to 0.5 s (each removal noted in `lost`)."""

    def lose(stop: threading.Event) -> None:
        heads = os.path.join(second, "heads")
        while not stop.wait(rnd.uniform(0.1, 0.5)):  # (the fault's own pace: a store losing files now and then)
            slots = [h for h in os.listdir(heads) if h.startswith("ed") and h not in names]  # (the members slot)
            every = names + slots
            for h in every if rnd.random() < 0.3 else [rnd.choice(every)]:
                try:
                    os.remove(os.path.join(heads, h))
                    lost.append(1)
                except FileNotFoundError:
                    pass

    return lose


@seeded_rounds(4)
def test_a_mirror_losing_logs_on_one_store_killed_at_random_moments_is_repaired_whole(
    make_daemon, tmp_path, monkeypatch, seed
):
    monkeypatch.setenv("CRASH_SEED", str(seed))
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    a, b, sid = shared_writers(make_daemon, [f"file://{first}", f"file://{second}"], "repaired")
    acked: list[str] = ["first"]
    errors: list[BaseException] = []
    lost: list[int] = []

    def syncing(c: Client, i: int) -> None:  # a sync now and then: its repair check runs before its pushes
        c.sync(sid, wait=True, timeout=10)
        stopping.wait(0.2)

    stopping = threading.Event()
    killed_while(
        [
            appender(a, sid, "a", acked, errors),
            appender(b, sid, "b", acked, errors),
            lambda stop: calls(a.home, syncing, stop, errors, timeout=20),
            lambda stop: calls(b.home, syncing, stop, errors, timeout=20),
            _losing(second, _log_heads(sid, a, b), lost, random.Random(seed)),
        ],
        [a, b],
        KILLS,
        lo=0.1,
        hi=0.6,
        between=progressing(acked, errors),
    )
    stopping.set()
    assert not errors, errors
    assert len(acked) >= 1 + KILLS  # one acknowledged a kill at least (however slow the machine)
    assert lost  # (the second store lost logs as the kills came)

    try:
        converge([a, b], sid, acked, timeout=60)
    finally:
        keep_homes(first, a, b)
    there = os.listdir(os.path.join(second, "heads"))
    assert set(_log_heads(sid, a, b)) <= set(there)  # (both writers' logs in the second store again: converge's sync)
    d = make_daemon(f"file://{second}").start()
    d.client().import_code(a.client().share(sid)["code"])
    wait_for(
        lambda: set(acked) <= set(contents(d, sid)), timeout=30, what="D, on the second store, holds every message"
    )
    assert contents(d, sid) == contents(a, sid)
