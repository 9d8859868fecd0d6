"""A strict S5 portal (servers/s5portal.py) served on loopback for one test, with its faults settable,
and S5Store clients of it that give up fast: what the tests of failing and hung stores share."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable

from servers.s5portal import Portal, Running, make_app
from sessiond.stores.http import RetryPolicy
from sessiond.stores.s5 import S5Store

FAST = RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.05)


@contextlib.asynccontextmanager
async def served_portal() -> AsyncIterator[Portal]:
    p = Portal()
    running = await Running(make_app(p)).start()
    p.authority = f"127.0.0.1:{running.port}"
    try:
        yield p
    finally:
        if p.faults.hang is not None:
            p.faults.hang.set()  # let the parked requests end
        await running.stop()


def s5(p: Portal, tmp_path, name: str, timeout: float = 10) -> S5Store:
    """A client of portal `p` with its own account (from `name`) and token folder, retrying little."""
    return S5Store(
        f"s5+http://{p.authority}",
        account_seed=name.encode() * 32,
        token_dir=str(tmp_path / f"tokens-{name}"),
        retry=FAST,
        timeout=timeout,
    )


async def failure_of(call: Awaitable[object], expected: type[BaseException]) -> BaseException:
    """The `expected` failure `call` raises (an AssertionError if it goes through)."""
    try:
        await call
    except expected as exc:
        return exc
    raise AssertionError(f"{call!r} went through, where the store's answer should have been refused")


def one_session(make_daemon, url: str, name: str) -> tuple:
    """A daemon on `url` (make_daemon's), its client, and a session `name` holding one message, "one"."""
    d = make_daemon(url).start()
    c = d.client()
    sid = c.create_session(name=name)["id"]
    c.append(sid, "user", "one")
    return d, c, sid
