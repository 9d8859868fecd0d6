"""Waiting in tests: poll a condition until it holds or a deadline passes, never sleep a fixed time.

A fixed sleep is either too short on a loaded machine (a flaky test) or too long everywhere (a slow
suite). `wait_for` (blocking) and `eventually` (asyncio) poll instead and return the condition's first
truthy value, or fail with `what` once `timeout` seconds have passed.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met within {timeout:g} s")
        time.sleep(interval)  # the poll interval, not a wait for something


async def eventually(
    predicate: Callable[[], Any | Awaitable[Any]],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> Any:
    """`predicate` may be a plain function or return an awaitable (an async function)."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if inspect.isawaitable(v):
            v = await v
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met within {timeout:g} s")
        await asyncio.sleep(interval)  # the poll interval, not a wait for something
