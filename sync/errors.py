"""The errors of the sync engine, and how a failure is told to the user."""

from __future__ import annotations

import asyncio
import os

from ..storage.redact import scrub_text


def crash_point(name: str) -> None:
    """A fault hook for the crash tests: SESSIOND_CRASH_AT=name makes the daemon die here at once, as
    under kill -9 (no clean-up, no flush)."""
    if os.environ.get("SESSIOND_CRASH_AT") == name:
        os._exit(137)


class SyncError(Exception):
    """A push that must not go on (a torn local log, a head in the store this device did not write)."""


class ImportError_(Exception):
    """An import or pull that cannot be completed; `kind` names the problem."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "the store did not answer in time"
    return scrub_text(str(exc)) or type(exc).__name__  # a store URL in it shown without its credentials
