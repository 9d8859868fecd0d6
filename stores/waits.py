"""Waiting for a batch of a store's writes (futures: the folder store's batched writer's, its writer threads'
wrapped) without leaving asyncio anything to report.

asyncio.wait_for(asyncio.gather(...)) given up (its task cancelled: the daemon stopping mid-push) cancels
the gather, whose own future then holds a CancelledError no one reads: asyncio prints "_GatheringFuture
exception was never retrieved" on the daemon's stderr. `gathered` waits with asyncio.wait instead; a wait
given up (a timeout, a cancellation) cancels the futures still pending and retrieves the errors of those
done. The writes themselves go on regardless: each is atomic, and a batch's objects are durable before its
heads (filebatch.py); a write whose future was cancelled is done and its answer dropped."""

from __future__ import annotations

import asyncio


async def gathered(futs: list[asyncio.Future], timeout: float | None) -> list:
    """The results of `futs`, in order, once all are done; the first error among them raised (every one
    retrieved); `timeout` bounds the wait (TimeoutError)."""
    if not futs:
        return []
    try:
        _, pending = await asyncio.wait(futs, timeout=timeout)
    except asyncio.CancelledError:
        _give_up(futs)
        raise
    if pending:
        _give_up(futs)
        raise TimeoutError(f"the store's writes took longer than {timeout:g} s")
    errors = [f.exception() for f in futs]  # (each retrieved)
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return [f.result() for f in futs]


def _give_up(futs: list[asyncio.Future]) -> None:
    for f in futs:
        if not f.cancel() and not f.cancelled():
            f.exception()  # done with an error no one will raise now: retrieved
