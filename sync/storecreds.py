"""The credentials of the stores sessions were imported from (`sessiond import --store URL`), kept across
restarts without being part of what the database records.

A session imported from another store records that store by its identity (stores/urls.py: scheme, host,
port and path; an invite, a user:password or a token left out), so that sessions.db, the logs and the
status never hold a secret. The credentials the import was given are kept here instead: one private
(0600) JSON file in the home's keys folder, {identity: credentials}, written atomically, and put back
into the URL when the store is opened again (after a restart: a pull, a push, gc).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from ..storage.fsutil import atomic_write
from ..stores.base import StoreError
from ..stores.urls import parse_store_url
from .mirrorurls import SEPARATOR, mirror_urls, stores_identity

log = logging.getLogger("sessiond")

FILE = "store-credentials"  # in the keys folder


class StoreCredentials:
    def __init__(self, folder: str):
        self.path = os.path.join(folder, FILE)
        self._known: dict[str, str] | None = None  # read once, on first use
        self._lock = threading.Lock()  # remember() runs in a worker thread
        # the event loop's turn: an import's remember() after its session is recorded, and a deletion's
        # prune() with the stores in use read just before it, one at a time (else a prune that read the
        # stores before an import recorded its session could drop the credentials that import just kept)
        self._turn = asyncio.Lock()

    def _load(self) -> dict[str, str]:
        if self._known is None:
            try:
                with open(self.path, encoding="utf-8") as f:
                    data = json.load(f)
            except FileNotFoundError:
                data = {}
            except (OSError, ValueError) as exc:  # never quoted: the file holds secrets
                log.warning(
                    f"the store credentials file {self.path} cannot be read ({type(exc).__name__}): sessions "
                    f"imported with `sessiond import --store URL` from a store that needs a password may fail to "
                    f"sync; import them again with their --store URL"
                )
                data = {}
            ok = isinstance(data, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in data.items())
            self._known = data if ok else {}
        return self._known

    def remember(self, url: str) -> bool:
        """Keep the credentials `url` carries (each of a mirror's URLs), by the identity of the store they
        open; True if the file changed. Blocking (a durable write): call it in a worker thread."""
        with self._lock:
            known = dict(self._load())
            for u in mirror_urls(url):
                try:
                    parsed = parse_store_url(u)
                except StoreError:
                    continue  # a folder, or not a network store URL: no credentials
                if parsed.credentials:
                    known[parsed.identity] = parsed.credentials
            if known == self._load():
                return False
            atomic_write(self.path, json.dumps(known, sort_keys=True).encode(), 0o600)
            self._known = known
            return True

    async def remembered(self, url: str) -> bool:
        """remember(url), in a worker thread, in turn with pruned()."""
        async with self._turn:
            return await asyncio.to_thread(self.remember, url)

    async def pruned(self, in_use: Callable[[], Awaitable[list[str]]]) -> bool:
        """prune() of the store URLs `in_use()` reads, in a worker thread, in turn with remembered()."""
        async with self._turn:
            urls = await in_use()
            return await asyncio.to_thread(self.prune, urls)

    def prune(self, in_use: list[str]) -> bool:
        """Forget the credentials of every store none of the URLs `in_use` names (each a store identity
        or a mirror's: the stores sessions still sync through), so that a store's password or invite
        does not outlive the last session imported from it; True if the file changed. Blocking (a
        durable write): call it in a worker thread."""
        with self._lock:
            known = self._load()
            if not known:
                return False
            used = {u for url in in_use for u in mirror_urls(stores_identity(url))}
            kept = {k: v for k, v in known.items() if k in used}
            if kept == known:
                return False
            atomic_write(self.path, json.dumps(kept, sort_keys=True).encode(), 0o600)
            self._known = kept
            return True

    def fill(self, url: str) -> str:
        """`url` (a store identity, or a mirror's) with the credentials kept for each of its stores that
        carries none; as it is otherwise."""
        known = self._load()
        if not known:
            return url
        out = []
        for u in mirror_urls(url):
            try:
                parsed = parse_store_url(u)
            except StoreError:
                out.append(u)
                continue
            creds = known.get(parsed.identity)
            if parsed.credentials or creds is None:
                out.append(u)
            else:
                out.append(f"{parsed.scheme}://{quote(creds, safe=':')}@{parsed.authority}{parsed.path}")
        return SEPARATOR.join(out)
