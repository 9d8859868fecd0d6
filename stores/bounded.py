"""A store call bounded by the daemon itself (an import's read, a pull's, verify's: `bounded`), its bound the
store's own timeout (store_timeout), so it fires as the HTTP client's own would, or first. What the call's HTTP
try had received by then is read when it fires: an answer still arriving (a slow drip) is said as one
(SlowAnswer: its status, so many bytes in, store_timeout named), not as no answer at all.

HttpClient notes each try under way in UNDER_WAY (a list the bound made, shared with the call's task through
its context) and takes it off when the try ends by itself: one cancelled by the bound stays, for it to read."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from .errors import SlowAnswer, StoreTimeout

T = TypeVar("T")


@dataclass
class Arriving:
    """How far one try's answer got: its status once its head arrived, its body's bytes read so far, and how
    many its Content-Length promised (for a try whose time was up: timed_out)."""

    status: int | None = None
    size: int = 0
    promised: int | None = None


# the tries under way of the call a bound covers: (what, its answer so far), the newest last
UNDER_WAY: contextvars.ContextVar[list[tuple[str, Arriving]] | None] = contextvars.ContextVar("under_way", default=None)


def timed_out(what: str, arriving: Arriving, timeout: float) -> StoreTimeout:
    """The try's time was up: with no answer yet, or (SlowAnswer) with one still arriving (a slow drip)."""
    if arriving.status is None:
        return StoreTimeout(f"{what}: no answer within {timeout:g} s")
    of = f" of {arriving.promised}" if arriving.promised is not None else ""
    return SlowAnswer(
        f"{what}: its answer (HTTP {arriving.status}) was still arriving after {timeout:g} s, {arriving.size}"
        f"{of} bytes in"
    )


async def bounded(call: Awaitable[T], timeout: float) -> T:
    """`call` (a store call) within `timeout` seconds, as asyncio.wait_for; its bound firing while an HTTP
    answer was still arriving is a SlowAnswer saying what had arrived, else the TimeoutError."""
    under: list[tuple[str, Arriving]] = []
    token = UNDER_WAY.set(under)
    try:
        return await asyncio.wait_for(call, timeout)
    except TimeoutError:
        arrived = [(what, a) for what, a in under if a.status is not None]
        if arrived:
            raise timed_out(*arrived[-1], timeout) from None
        raise
    finally:
        UNDER_WAY.reset(token)
