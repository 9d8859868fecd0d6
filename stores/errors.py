"""The ways a network store fails, each its own class (all StoreError, so every caller that handles a
store failure handles these). Messages name the store and what to do; they never contain a token."""

from __future__ import annotations

import errno

from .base import CorruptObject, StoreError


class StoreUnreachable(StoreError):
    """No connection could be made (refused, DNS, reset)."""


class AuthRefused(StoreError):
    """The server refused our credentials, after one fresh login where the store can log in."""


class ObjectTooLarge(StoreError):
    """The object is larger than this store accepts."""


class StoreFull(StoreError):
    """The store has no room left: the disk under a folder store is full, or its owner's quota is used up."""


def write_error(what: str, where: str, exc: OSError) -> StoreError:
    """A folder store's failed write, as the StoreError it is: StoreFull for a full disk or quota."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFull(
            f"{what}: the disk holding {where} is full ({exc.strerror}); free space there, or move this"
            f" device to another store (restart the daemon with `--store URL --change-store`)"
        )
    return StoreError(f"{what}: {exc.strerror}")


# Failures that waiting does not mend: a retry after a backoff meets them again until someone acts (frees
# space, fixes a token, picks another store). `sessiond sync --wait` stops waiting on them.
def settled(exc: BaseException) -> bool:
    return isinstance(exc, (StoreFull, AuthRefused, ObjectTooLarge, ReadOnlyStore, LyingServer))


class RateLimited(StoreError):
    """429/503 that did not clear within the retries; `retry_after` is the server's last wish (s)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


# The longest a server's Retry-After is honoured (seconds): a server asking for hours (or a clock far off
# in its HTTP-date) does not stop a device's pushes for that long; it is asked again after this.
MAX_SERVER_WAIT = 900.0


def server_wait(exc: BaseException) -> float | None:
    """How long the server asked us to wait before trying again (its Retry-After on a 429 or 503, in
    seconds or as an HTTP-date, capped at MAX_SERVER_WAIT), or None if it did not say."""
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return max(0.0, min(exc.retry_after, MAX_SERVER_WAIT))
    return None


class ServerError(StoreError):
    """A 5xx that did not clear within the retries (with jittered backoff), or a reply we cannot use."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class StoreTimeout(StoreError):
    """The server did not answer in time."""


class ReadOnlyStore(StoreError):
    """A write to a store that can only be read (a gateway)."""


class LyingServer(StoreError):
    """The server answered something provably wrong: bytes that do not hash to what was asked, a CID
    other than the one computed here, a head that does not verify or goes back in revision. Such an
    answer is never accepted."""


class WrongBytes(LyingServer, CorruptObject):
    """An object's bytes do not hash to the requested digest (a CorruptObject too, for callers that
    handle damaged objects)."""

    def __init__(self, h: bytes, why: str):
        CorruptObject.__init__(self, h, why)
