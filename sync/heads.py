"""What a device's head points to, and the level tree a push records.

A head (a signed registry entry) holds `0x1e | BLAKE3(manifest)`; the manifest has no encrypted CID of
its own: its key comes from the session key, the head key and the revision. `sync_state.tree` records
this device's log as levels of entries (dag-cbor), between pushes and in an imported own log.
"""

from __future__ import annotations

from ..stores import StoreError, check_object
from ..stores.bounded import bounded
from ..stores.registry import RegistryEntry, RegistryError
from . import dagcbor
from .crypto import DecryptError, manifest_key, open_unpadded
from .pages import Entry

HEAD_DATA_PREFIX = b"\x1e"


def head_data(manifest_hash: bytes) -> bytes:
    return HEAD_DATA_PREFIX + manifest_hash


def manifest_hash_of(entry: RegistryEntry) -> bytes:
    if len(entry.data) != 33 or entry.data[:1] != HEAD_DATA_PREFIX:
        raise RegistryError("head data is not 0x1e followed by a 32-byte BLAKE3 hash")
    return entry.data[1:]


def open_manifest(ct: bytes, mhash: bytes, session_key: bytes | list[bytes], head_pk: bytes, rev: int) -> bytes:
    """A head manifest has no encrypted CID of its own: its key comes from the revision and its plaintext
    is checked by parsing. Returns the plaintext."""

    check_object(mhash, ct)  # the store should have checked; a lying one may not have
    keys = [session_key] if isinstance(session_key, bytes) else session_key
    for i, key in enumerate(keys):  # the current key, then those from before a rekey
        try:
            return open_unpadded(ct, manifest_key(key, head_pk, rev))
        except DecryptError:
            if i == len(keys) - 1:
                raise
    raise DecryptError("no key to open the manifest with")


def levels_to_cbor(levels: list[list[Entry]]) -> list:
    return [[e.to_cbor() for e in lv] for lv in levels]


def encode_levels(levels: list[list[Entry]]) -> bytes:
    """dagcbor.encode(levels_to_cbor(levels)), from each entry's encoding made once (Entry.encoded): what
    a push writes into its manifest and records as its tree, without encoding the entries again."""
    return b"".join(
        [dagcbor.head(4, len(levels))]
        + [dagcbor.head(4, len(lv)) + b"".join([e.encoded() for e in lv]) for lv in levels]
    )


def levels_from_cbor(data: bytes | None) -> list[list[Entry]]:
    if not data:
        return [[]]
    return [[Entry.from_cbor(e) for e in lv] for lv in dagcbor.decode(data)]


async def published_before(
    store, timeout: float, keys: list[bytes], head_pk: bytes, head: RegistryEntry, plain: bytes
) -> bool:
    """Whether the store's `head` holds the manifest `plain` itself, sealed under one of `keys` (the session's
    keys, the current one and those from before a rekey): this device's own revision, as a push published it
    before a rekey switched the key under it. Any failure to tell is a no."""
    try:
        mhash = manifest_hash_of(head)
        ct = await bounded(store.get(mhash), timeout)
        return open_manifest(ct, mhash, keys, head_pk, head.revision) == plain
    except (StoreError, RegistryError, DecryptError, TimeoutError):
        return False
