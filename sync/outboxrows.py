"""Rows of a mirror's outbox made sendable (sync/mirror.py drains them): rows an earlier version queued
under another name of a store, and heads kept without the key a store that signs heads itself needs."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable

from nacl.signing import SigningKey

from ..storage.outbox import Outbox
from ..stores import Store
from ..stores.registry import RegistryEntry
from ..stores.urls import store_identity

log = logging.getLogger("sessiond.sync")

# the signing key of this device's head, or of a members slot it signs (0xed | public key), or None
HeadKey = Callable[[bytes], Awaitable[SigningKey | None]]


async def adopt_renamed(outbox: Outbox, urls: list[str], counts: dict[str, int]) -> dict[str, int]:
    """Rows an earlier sessiond queued under another name of one of the stores `urls` (before a store's
    URL left its credentials out, a Kubo node's was `ipfs+http://USER:PASSWORD@HOST:PORT`) are given to
    the store as it is named now: otherwise they would wait for ever, and the password with them in
    sessions.db. `counts`: the rows waiting per URL; returns them as they are then."""
    ours = set(urls)
    moved = 0
    for url in counts:
        if url in ours:
            continue
        same = store_identity(url)  # (a store no longer in the mirror under any name: left as it is)
        if same in ours:
            moved += await outbox.move(url, same)
    if moved:
        log.info("mirror outbox rows of an earlier version moved to their store", extra={"objects": moved})
        counts = await outbox.counts()
    return counts


async def with_key(entry: RegistryEntry, head_key: HeadKey | None) -> RegistryEntry:
    """`entry` with its signing key, if this device holds it (see MirrorStore head_key)."""
    if entry.signing_key is not None or head_key is None:
        return entry
    key = await head_key(entry.pk)
    if key is None or b"\xed" + bytes(key.verify_key) != entry.pk:
        return entry  # another device's head (a store that signs heads itself cannot take it)
    return dataclasses.replace(entry, signing_key=key)


def unsendable(st: Store) -> None:
    """A head waiting for `st`, which signs heads itself, whose key this device no longer holds."""
    log.warning(
        "a head waiting for this store cannot be sent without its key (its session was deleted or rekeyed"
        " since): skipped; the session's next change goes directly",
        extra={"store": st.url},
    )
