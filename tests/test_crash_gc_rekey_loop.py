"""kill -9 of either writer at random moments while both append, A rekeys the session again and again and
both run `gc --grace 0` again and again (gc frees what this device's logs let go: the manifests a head moved on
from, the members objects a rekey wrote over): after the restarts the writers converge on every acknowledged
message once, verify and doctor are clean on both, and nothing the devices need was freed: a third device
importing a fresh share code reads every page from the store and holds every acknowledged message, after one
more gc on each too. CRASH_KILLS sets how many kills; KEEP_HOMES=DIR keeps the homes of a run that fails."""

from __future__ import annotations

import os
from collections.abc import Callable

from conftest import cli_json
from killing import (
    calls,
    contents,
    converge,
    keep_homes,
    killed_while,
    rekeying,
    session_key,
    shared_writers,
    waiting_for,
)
from sessiond.client import ApiError, Client

KILLS = int(os.environ.get("CRASH_KILLS", 7))


def test_gc_rekeys_and_appends_killed_at_random_moments_free_nothing_a_device_needs(make_daemon, store_dir):
    url = f"file://{store_dir}"
    a, b, sid = shared_writers(make_daemon, url, "collected")
    acked: list[str] = ["first"]
    first_key = session_key(a, sid)
    rekeyed: list[int] = []
    errors: list[BaseException] = []
    killed_while(
        collecting(a, b, sid, acked, rekeyed, errors),
        [a, b],
        KILLS,
        lo=0.1,
        hi=0.5,
        between=waiting_for(lambda: bool(rekeyed), "a rekey answered", KILLS // 2),
    )
    assert not errors, errors
    try:
        log = converge([a, b], sid, acked)
        assert session_key(a, sid) == session_key(b, sid) != first_key
    except AssertionError:
        keep_homes(store_dir, a, b)
        raise
    nothing_freed(make_daemon, url, a, b, sid, log)


def collecting(a, b, sid: str, acked: list[str], rekeyed: list[int], errors: list, *, store_killed=False) -> list:
    """The workers for killed_while: A and B append one to three messages at a time (a sync now and then, each
    acknowledged one noted in `acked`), A rekeys (killing.REKEYS times at most, each noted in `rekeyed`) and both run
    `gc --grace 0` again and again. `store_killed`: the store is a victim too, and a rekey or gc refused as its store
    unreachable meanwhile (503 `store`: nothing done, to be asked again) goes on."""

    def tried(work: Callable[[Client, int], None]) -> Callable[[Client, int], None]:
        def attempt(c: Client, i: int) -> None:
            try:
                work(c, i)
            except ApiError as exc:
                if not (store_killed and exc.code == "store"):
                    raise

        return attempt

    def batches(name: str, d):
        def append(c: Client, i: int) -> None:
            c.append_many(sid, [{"role": "user", "content": f"{name}{i}.{j}"} for j in range(1 + i % 3)])
            acked.extend(f"{name}{i}.{j}" for j in range(1 + i % 3))
            if i % 4 == 0:
                c.sync(sid, wait=True, timeout=10)

        return lambda stop: calls(d.home, append, stop, errors, timeout=20)

    def collect(c: Client, i: int) -> None:
        c.gc(grace=0)

    return [
        batches("a", a),
        batches("b", b),
        # (A rekeys killing.REKEYS times at most: B, killed or slowed by its gc, fell past the 16 a device may be
        # behind, and kept what it had: 7 runs in 30 under CPU hogs, before)
        lambda stop: calls(a.home, tried(rekeying(sid, rekeyed)), stop, errors, timeout=20),
        lambda stop: calls(a.home, tried(collect), stop, errors, timeout=20),
        lambda stop: calls(b.home, tried(collect), stop, errors, timeout=20),
    ]


def nothing_freed(make_daemon, url: str, a, b, sid: str, log: list[str]) -> None:
    """Nothing the devices need was freed: a device importing a fresh code from the store at `url` reads `log`, and
    so does one importing after one more gc on each of `a` and `b`."""
    c = make_daemon(url).start()
    c.client().import_code(a.client().share(sid)["code"])
    assert contents(c, sid) == log
    for d in (a, b):
        cli_json(d.home, "gc", "--grace", "0")  # and once more, all quiet
    d = make_daemon(url).start()
    d.client().import_code(b.client().share(sid)["code"])
    assert contents(d, sid) == log
    assert cli_json(d.home, "verify")["ok"]
