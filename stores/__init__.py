"""Network stores behind the one `Store` interface (storage/store.py): S5 portals, a Kubo node's RPC,
and trustless IPFS gateways. `open_network_store(url)` picks one by URL; storage.store.open_store
hands these URL schemes to it.

Imports flow daemon -> sync -> stores/storage: nothing here imports sync/, daemon/ or cli/.
"""
from __future__ import annotations

from .config import configure, open_network_store, NETWORK_SCHEMES

__all__ = ["configure", "open_network_store", "NETWORK_SCHEMES"]
