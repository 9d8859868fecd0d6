"""The entry of a members slot (members.py), read and checked before its object is.

A members slot's entry is an S5 registry entry signed by the session's announce key, whose data is
`0x1e | BLAKE3(members object) | salt (14)`. Here: what a read of it may find wrong (forged, another key's,
rolled back, malformed, expired, missing), each said as the ImportError_ that names it, and what a missing
head may also mean on a store whose heads expire.
"""

from __future__ import annotations

from collections.abc import Sequence

from nacl.signing import SigningKey

from ..stores import HeadExpired, Store, StoreError
from ..stores.bounded import bounded
from ..stores.errors import LyingServer, failing
from ..stores.registry import RegistryEntry, RegistryError
from .crypto import CTX_ANNOUNCE, derive
from .errors import ImportError_, bad_log, store_failed
from .membersobject import SALT_LEN

# what a read of the members slot says when the store lost it: its entry gone, not validly signed (damaged,
# or written without the key) or not 0x1e | hash | salt, its object gone or damaged. A device that wrote the
# slot writes it again (Members.restore)
LOST = frozenset({"missing", "damaged", "malformed", "forged"})


def announce_key(write_secret: bytes) -> SigningKey:
    """The key that signs a session's members slot, derived from its write secret."""
    return SigningKey(derive(CTX_ANNOUNCE, write_secret))


def bad_slot(kind: str, sid: str, message: str) -> ImportError_:
    """The members slot of session `sid` found bad (`kind`: forged, replayed, malformed, damaged), with what
    mends it: a writer writes it again (errors.bad_log)."""
    return bad_log(ImportError_(kind, message), sid, None)


def expiry_hint(stores: Sequence[Store]) -> str:
    """What a missing head may also mean on a store whose heads expire (Kubo answers a record past its
    end of life as not found): "" for other stores."""
    if not any(st.heads_expire for st in stores):
        return ""
    return (
        "; on IPFS a head is an IPNS record that expires, and a node answers an expired one as not found:"
        " if no writer's daemon has run within the record's lifetime, its heads expired; start the daemon of"
        " the device that shared it (it writes its heads again when it starts), then import again"
    )


async def checked_entry(
    store: Store, sid: str, pk: bytes, min_rev: int, entry: RegistryEntry | None, timeout: float
) -> RegistryEntry:
    """The members slot's entry (`pk`: 0xed | announce key), read from `store` unless given, checked: signed
    by its key, not older than `min_rev`, 0x1e | hash | salt; else the ImportError_ that says what it is."""
    try:
        if entry is None:
            entry = await bounded(store.get_head(pk), timeout)
    except RegistryError as exc:
        raise bad_slot("forged", sid, f"the members entry of session {sid} is not validly signed: {exc}") from None
    except LyingServer as exc:  # a network store's own head checks: forged, another key's, rolled back
        raise bad_slot("forged", sid, f"the members entry of session {sid} is refused: {exc}") from None
    except HeadExpired as exc:  # signed by a writer, but no longer valid: not a lie, a head not renewed
        raise ImportError_("head_expired", f"the session's members entry cannot be used: {exc}") from None
    except (TimeoutError, StoreError, OSError) as exc:
        if failing(exc):  # the store failed to answer: nothing is known of the entry
            raise store_failed(exc, store.url) from None
        raise
    if entry is None:
        raise ImportError_(
            "missing",
            f"the store has no members entry for session {sid} (wrong store, or the sharer has not pushed yet"
            f"{expiry_hint([store])})",
        )
    if entry.pk != pk:
        raise bad_slot("forged", sid, f"the members entry of session {sid} is signed by another key")
    if entry.revision < min_rev:
        raise bad_slot(
            "replayed",
            sid,
            f"the members entry of session {sid} was rolled back to revision {entry.revision} (this device"
            f" has seen {min_rev})",
        )
    if len(entry.data) != 1 + 32 + SALT_LEN or entry.data[0] != 0x1E:
        raise bad_slot("malformed", sid, f"the members entry of session {sid}: its data is not 0x1e | hash | salt")
    return entry
