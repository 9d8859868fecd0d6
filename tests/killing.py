"""The crash tests' loop: work running in threads against daemons killed (SIGKILL) at random moments and
started again. CRASH_SEED picks the moments."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable

from sessiond.client import ApiError, Client, ClientError


def calls(home: str, work: Callable[[Client, int], None], stop: threading.Event, errors: list, timeout: float = 10):
    """`work(client, i)` for i = 1, 2, ... on a new client of the daemon of `home` each, until `stop`: a call
    the daemon's kill broke (ClientError, OSError) was not acknowledged, and the loop goes on; an ApiError,
    a real answer of a live daemon, is noted in `errors` and ends it."""
    i = 0
    while not stop.is_set():
        i += 1
        try:
            with Client(home, timeout=timeout) as c:
                work(c, i)
        except ApiError as exc:
            errors.append(exc)
            return
        except (ClientError, OSError):
            time.sleep(0.02)  # the daemon is down or was killed mid-request


def killed_while(
    workers: list[Callable[[threading.Event], None]],
    victims: list,
    kills: int,
    *,
    lo: float = 0.05,
    hi: float = 0.4,
    between: Callable[[int, random.Random], None] | None = None,
) -> None:
    """Run each of `workers(stop)` in a thread while one of `victims` (DaemonProcs) is killed and started again
    `kills` times, `lo` to `hi` seconds apart (`between(k, rnd)` called before each kill); then stop them and
    wait for them to end."""
    stop = threading.Event()
    threads = [threading.Thread(target=w, args=(stop,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    rnd = random.Random(int(os.environ.get("CRASH_SEED", "1")))
    try:
        for k in range(kills):
            time.sleep(rnd.uniform(lo, hi))  # the scenario: a kill at a random moment of the work
            if between is not None:
                between(k, rnd)
            victim = rnd.choice(victims)
            victim.kill()
            victim.start()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a worker did not end"
