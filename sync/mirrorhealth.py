"""A mirror's stores and their health (sync/mirror.py's base): what each did last, as its reads, writes
and drain (sync/mirrordrain.py) report it: answering, or failed and backed off (its Retry-After kept when it
asked for one) with the failure's kind and message; which stores a read tries first and which to leave alone
meanwhile, which should hold everything written so far, and the per-store rows of `status()`."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from ..storage.outbox import Outbox
from ..storage.redact import shown_url
from ..stores import CorruptObject, Store
from ..stores.errors import LyingServer, failure_kind, server_wait
from ..stores.registry import RegistryError

log = logging.getLogger("sessiond.sync")


def describe_error(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


@dataclass
class Health:
    reachable: bool | None = None  # None: not used yet
    last_error: str | None = None
    pending: int = 0  # rows in its outbox (at least: an estimate between counts, never below the truth)
    writing: int = 0  # writes sent straight to it and not answered yet (MirrorStore._write_to)
    added: int = 0  # writes queued since start (a drain that found the outbox empty checks none came meanwhile)
    failures: int = 0
    retry_at: float = 0.0  # monotonic: when a store that failed is tried again
    server_wait: float | None = None  # what the store asked for (Retry-After, s) when it last failed
    failure: str | None = None  # its last failure's kind, as a person reads it (stores.errors.failure_kind)
    read_only: bool = False  # a gateway: read from, never written to (nothing is queued for it)
    catch_ups: int = 0  # times it caught up (its outbox sent, or answering again): a follower waits for one
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set while no write is under way (`writing` 0)

    def __post_init__(self) -> None:
        if not self.writing:
            self.idle.set()

    def began(self) -> None:
        """A write sent straight to the store (MirrorStore._write_to): under way until `ended`."""
        self.writing += 1
        self.idle.clear()

    def ended(self) -> None:
        self.writing -= 1
        if not self.writing:
            self.idle.set()


class MirrorHealth(Store):
    """The stores of a mirror and each one's `Health` (by URL). Not a store by itself: MirrorStore is."""

    def __init__(self, stores: list[Store], outbox: Outbox, *, timeout: float, max_backoff: float):
        self.stores = stores
        self.outbox = outbox
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.health = {s.url: Health() for s in stores}

    def _ok(self, st: Store) -> None:
        h = self.health[st.url]
        h.reachable, h.failures, h.retry_at, h.server_wait = True, 0, 0.0, None
        if not h.pending:
            h.last_error = None

    def _failed(self, st: Store, exc: BaseException) -> None:
        h = self.health[st.url]
        h.reachable = False
        h.failure = (  # an answer refused is a store that lies (or is damaged), not one that is down
            "answering what does not verify"
            if isinstance(exc, (LyingServer, CorruptObject, RegistryError))
            else failure_kind(exc)
        )
        bare_timeout = isinstance(exc, TimeoutError) and not str(exc)  # (asyncio.wait_for's: no message)
        h.last_error = (
            f"{shown_url(st.url)}: no answer within {self.timeout:g} s" if bare_timeout else describe_error(exc)
        )
        h.failures += 1
        backoff = min(self.max_backoff, 0.2 * 2 ** (h.failures - 1))
        asked = server_wait(exc)  # a 429/503 with Retry-After: not asked again before then
        # kept as the store's wait when it is the one that sets the next try (a `Retry-After: 0`, or a wait
        # shorter than our backoff, asks for none past it: the next try is our backoff's, and said so)
        h.server_wait = asked if asked is not None and asked >= backoff else None
        h.retry_at = time.monotonic() + max(backoff, asked or 0.0)
        log.warning("mirror store failed: %s", h.last_error, extra={"store": st.url})

    def _usable(self, st: Store) -> bool:
        """Not known to be down. A store that failed is tried again by the drain loop (after a backoff),
        not by the reads and writes meanwhile, which would each wait for it to fail again."""
        return self.health[st.url].reachable is not False

    def caught_up(self) -> list[Store]:
        """The stores that should hold everything written so far: written to (not a gateway), answering,
        nothing waiting in their outbox, and no write to them under way (another store may have taken it:
        a read through the mirror finds what this one does not hold yet)."""
        return [
            s
            for s in self.stores
            if not (s.read_only or (h := self.health[s.url]).read_only or h.pending or h.writing) and self._usable(s)
        ]

    def _ordered(self) -> list[Store]:
        """Reads try the stores that answer first."""
        return sorted(self.stores, key=lambda s: not self._usable(s))

    async def status(self) -> list[dict]:
        counts = await self.outbox.counts()
        out: list[dict] = []
        for s in self.stores:
            h = self.health[s.url]
            h.pending = counts.get(s.url, 0)
            row: dict[str, object] = {
                "url": s.url,
                "reachable": h.reachable,
                "pending": h.pending,
                "last_error": h.last_error,
            }
            if h.reachable is False:
                row["failure"] = h.failure
                row["retry_in"] = round(max(0.0, h.retry_at - time.monotonic()), 2)
                if h.server_wait is not None:
                    row["retry_after"] = True  # retry_in is the store's own Retry-After
            out.append(row | s.write_stats() | s.service_status())
        return out
