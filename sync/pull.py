"""Reading a device's log back from a store (docs/FORMATS.md, "Snapshot layout"): LogReader fetches the
objects under a manifest's entries, opens and checks each one (sync/pages.py's checks), and returns the
operations, for a pull, an import or `verify` (audit)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..storage.model import Op, RemoteLog
from ..stores import Store, StoreError
from .crypto import DecryptError, EncryptedCID, open_sealed
from .pages import Entry, LogError, Page, parse_node, parse_page, parse_parts


class LogReader:
    """Fetches and checks a log's objects. Every object's hash, tag, plaintext id, session, device and
    sequence range is checked; anything else raises LogError or a store error naming the object."""

    def __init__(self, sid: str, device: str, store: Store, timeout: float = 30.0):
        self.sid = sid
        self.device = device
        self.store = store
        self.timeout = timeout
        self.fetched = 0
        self.on_page: Callable[[int], None] | None = None  # told the last seq of each page read (progress)

    async def _get(self, ref: EncryptedCID) -> bytes:
        async with asyncio.timeout(self.timeout):  # not wait_for: no task of its own for each object
            ct = await self.store.get(ref.hash)
        self.fetched += 1
        return open_sealed(ct, ref)

    async def pages(self, entries: list[Entry], after_seq: int = 0) -> list[tuple[Entry, Page]]:
        """The checked pages under `entries` that hold any seq > after_seq, in log order."""
        out: list[tuple[Entry, Page]] = []
        for e in entries:
            if e.last <= after_seq:
                continue
            plain = await self._get(e.ref)
            if e.node:
                out.extend(await self.pages(self._children(plain, e), after_seq))
                continue
            elif e.parts:
                out.append((e, self._page(await self._joined(plain, e), e)))
            else:
                out.append((e, self._page(plain, e)))
            if self.on_page is not None:
                self.on_page(e.last)
        return out

    async def ops(self, entries: list[Entry], after_seq: int = 0) -> list[Op]:
        """The operations of `entries` with seq > after_seq, in order."""
        out: list[Op] = []
        for e, page in await self.pages(entries, after_seq):
            out.extend(page.ops(self.sid, self.device, max(0, after_seq + 1 - e.first)))
        return out

    async def log(self, entries: list[Entry], after_seq: int = 0) -> RemoteLog:
        """The operations of `entries` with seq > after_seq, ready for Database.apply_remote: messages
        as rows for one batched insert (built column-wise, in C), other operations as Ops."""
        out = RemoteLog(self.device, [], [], after_seq)
        for e, page in await self.pages(entries, after_seq):
            page.into(out, self.sid, self.device, max(0, after_seq + 1 - e.first))
            out.last_seq = e.last
        return out

    async def audit(
        self, entries: list[Entry], stop: Callable[[BaseException], bool] | None = None
    ) -> tuple[list[Op], list[tuple[bytes, Entry, BaseException]]]:
        """Read and check every object under `entries`, going on past a damaged or missing one, for
        `verify`: (the operations of every sound page, in log order; (object hash, the entry it was
        reached by, what is wrong) for each object that cannot be read or is not what its entry says).
        Unlike pages(), which stops at the first problem, this names every damaged object that can
        be reached: only what lies below a damaged node or parts object cannot be listed. A failure for
        which `stop(exc)` is true (the store failing, not an object damaged) is raised at once: every
        read after it would fail the same way, each after the timeout."""
        ops: list[Op] = []
        bad: list[tuple[bytes, Entry, BaseException]] = []
        unreadable = (StoreError, DecryptError, LogError, asyncio.TimeoutError, OSError)

        async def visit(e: Entry) -> None:
            try:
                plain = await self._get(e.ref)
                if e.node:
                    children = self._children(plain, e)
                elif e.parts:
                    refs = self._part_refs(plain, e)
            except unreadable as exc:
                if stop is not None and stop(exc):
                    raise
                bad.append((e.ref.hash, e, exc))
                return
            if e.node:
                for c in children:
                    await visit(c)
                return
            if e.parts:
                chunks = []
                for r in refs:
                    try:
                        chunks.append(await self._get(r))
                    except unreadable as exc:
                        if stop is not None and stop(exc):
                            raise
                        bad.append((r.hash, e, exc))
                if len(chunks) != len(refs):
                    return
                plain = b"".join(chunks)
            try:
                ops.extend(self._page(plain, e).ops(self.sid, self.device))
            except LogError as exc:
                bad.append((e.ref.hash, e, exc))
            if self.on_page is not None:
                self.on_page(e.last)

        for e in entries:
            await visit(e)
        return ops, bad

    async def _joined(self, plain: bytes, e: Entry) -> bytes:
        """The plaintext of a page stored in parts (`plain` is its parts object)."""
        return b"".join([await self._get(r) for r in self._part_refs(plain, e)])

    def _part_refs(self, plain: bytes, e: Entry) -> list[EncryptedCID]:
        return parse_parts(plain, e, self.sid, self.device)

    def _children(self, plain: bytes, e: Entry) -> list[Entry]:
        return parse_node(plain, e, self.sid, self.device)

    def _page(self, plain: bytes, e: Entry) -> Page:
        return parse_page(plain, e, self.sid, self.device)
