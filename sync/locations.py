"""Where a shared session lives, as a share code says it: networks plus hints (docs/FORMATS.md, "Share
codes"), never the sharer's own store URLs as such, which may mean nothing on another device.

Making a code: each of the session's stores (one, or each of a mirror's) becomes a network ("relay" for
a `sessiond serve` relay, which has the change feed; "s5" for another S5 portal; "ipfs"; "folder")
and a hint: the store's URL without its credentials. A Kubo node's RPC URL is no hint (it is the
sharer's private API; any IPFS node or gateway finds the objects). A loopback hint (127.0.0.0/8, ::1,
localhost) is left out when the code has the hint of a store on another host, and kept when it is the
only network address there is (a relay reachable only there, a test on one machine).

Importing a code (findstore.py): the store given with --store, else this device's own store if it holds the
session's members slot, else each hint that holds it, else the import asks for --store. A hint is
never trusted blindly: it is used only once its members slot, signed by the code's announce key, is
read from it; a folder hint must already exist (nothing is created for a code); a loopback hint names
the importer's own machine, and is used on the same terms.
"""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit, urlunsplit

from ..stores import Store
from .mirror import MirrorStore
from .sharecode import network_of_url

RPC_SCHEMES = ("ipfs+http", "ipfs+rpc+http", "ipfs+rpc+https")  # a Kubo node's RPC: private, no hint


def is_loopback(url: str) -> bool:
    """Whether `url` names this machine only: a loopback host, or a folder (a path is local too)."""
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        return False  # a folder path is judged by the importer (it must exist and hold the session)
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _network_address(url: str) -> bool:
    return urlsplit(url).scheme not in ("", "file")


def hint_of(url: str) -> str | None:
    """A store URL as a hint: without credentials; None for a Kubo node's RPC."""
    parts = urlsplit(url)
    if parts.scheme in RPC_SCHEMES:
        return None
    if parts.scheme in ("", "file"):
        return url
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


async def network_of(store: Store) -> str:
    net = network_of_url(store.url)
    if net == "s5":
        has_feed = getattr(store, "has_change_feed", None)
        if has_feed is not None and await has_feed():
            return "relay"
    return net


async def locations_of(store: Store) -> list[tuple[str, str | None]]:
    """The locations a code names for a session kept in `store` (one store, or a mirror)."""
    members = store.stores if isinstance(store, MirrorStore) else [store]
    out = [(await network_of(st), hint_of(st.url)) for st in members]
    if any(h and _network_address(h) and not is_loopback(h) for _, h in out):
        out = [(n, None if h and is_loopback(h) else h) for n, h in out]
    return list(dict.fromkeys(out))


def relay_invite_ways(url: str) -> tuple[str, str]:
    """relay_account_fix's way on for an app: the invite asked of the relay's owner (`details.owner`), and the
    import again with it in the store URL, in API terms (`details.api`: CODE and INVITE filled in by the app)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    store = json.dumps(f"{parts.scheme}://INVITE@{netloc}{parts.path}")
    return (
        f"ask the owner of the relay {hint_of(url)} for an invite for this device (`sessiond serve invite` on the"
        f" relay's machine; each one registers one device, once)",
        f'POST /v1/import {{"code": CODE, "store": {store}}}',
    )


def relay_account_fix(url: str) -> str:
    """What a device does when a relay (`sessiond serve`, its registration closed) refuses it for want of an
    account there: an invite from the relay's owner, in the store URL of `import --store-file` (README,
    "Sync through S5, IPFS or your own relay"). `url`: the relay's, without credentials. (The invite's place
    is shown without a scheme before it: a URL with a user part in an error is shown with it hidden.)"""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return (
        f"this device has no account on the relay {hint_of(url)}: ask the relay's owner for an invite"
        f" (`sessiond serve invite` on the relay's machine; each one registers one device, once), then import"
        f" again with `sessiond import --store-file FILE`, FILE (0600) holding the relay's URL with the invite"
        f" put before its host as the URL's user part (INVITE@{netloc}{parts.path})"
    )
