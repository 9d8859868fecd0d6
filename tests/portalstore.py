"""A strict S5 portal (servers/s5portal.py) served on loopback for one test, with its faults settable,
and S5Store clients of it that give up fast: what the tests of failing and hung stores share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Iterator

from servers.s5portal import Portal, Running, Threaded, make_app
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


class Served:
    """A portal served from its own thread (threaded_portal): its state and faults (`portal`), its store URL."""

    def __init__(self, portal: Portal, server: Threaded):
        self.portal, self.server = portal, server
        self.url = f"s5+http://{portal.authority}"

    def hang(self) -> None:
        """Every request parked from now on: a store that takes connections and answers nothing."""
        self.portal.faults.hang = asyncio.Event()

    def push_waiting(self, d) -> str:
        """A session of daemon `d` (a DaemonProc started on this portal) shared, then the portal hung and a
        message written to it, which waits for its push: the session's id."""
        with d.client() as c:
            sid = c.create_session(name="shared", initial_messages=[{"role": "user", "content": "hi"}])["id"]
            c.share(sid)
        self.hang()
        with d.client() as c:
            c.append(sid, "user", "waits for its push")
        return sid

    def answer(self) -> None:
        """The parked requests let go, and the next ones answered (from the test's thread: the portal's loop's)."""
        hang, self.portal.faults.hang = self.portal.faults.hang, None
        if hang is not None:
            self.server.loop.call_soon_threadsafe(hang.set)


@contextlib.contextmanager
def threaded_portal() -> Iterator[Served]:
    """The portal served from its own thread, for tests that drive daemon processes; what it parked is let go
    as it stops."""
    p = Portal()
    server = Threaded(make_app(p)).start()
    p.authority = f"127.0.0.1:{server.port}"
    served = Served(p, server)
    try:
        yield served
    finally:
        served.answer()
        server.stop()


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
