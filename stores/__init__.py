"""Remote content-addressed stores behind the one `Store` interface (base.py), side by side: a folder
(file.py), S5 portals (s5.py), a Kubo node's RPC (kubo.py) and trustless IPFS gateways (gateway.py).
`open_store(url)` picks one by URL. Content ids (cid.py) and signed heads (registry.py, ipns.py) are
the formats they share.

Imports flow daemon -> sync -> stores -> storage: nothing here imports sync/, daemon/ or cli/.
"""

from __future__ import annotations

from .base import (
    MAX_OBJECT_SIZE,
    CannotDelete,
    CorruptObject,
    Freed,
    HeadExpired,
    ObjectMissing,
    StaleHead,
    Store,
    StoreError,
    check_object,
)
from .config import NETWORK_SCHEMES, configure, open_network_store, open_store
from .file import FileStore

__all__ = [
    "MAX_OBJECT_SIZE",
    "NETWORK_SCHEMES",
    "CannotDelete",
    "CorruptObject",
    "FileStore",
    "Freed",
    "HeadExpired",
    "ObjectMissing",
    "StaleHead",
    "Store",
    "StoreError",
    "check_object",
    "configure",
    "open_network_store",
    "open_store",
]
