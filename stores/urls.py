"""A network store's URL taken apart: which server it names (scheme, host, port and path: its identity),
and the credentials it may carry (an invite or a user:password before '@'), which are not part of it.

A store behind a reverse proxy lives under a path (https://host/prefix/): every request goes below that
prefix (/prefix/s5/..., /prefix/api/v0/...), so the path belongs to the store's identity and base URL.
Two URLs that differ only in their credentials name the same store: adding an invite to a relay's URL,
or changing a node's password, is not a move to another store.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .base import StoreError

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class StoreURL:
    scheme: str  # as given, lower case: s5+https, ipfs+http, ...
    host: str  # lower case; an IPv6 address without its brackets
    port: int | None  # as given; None: the default of the transport
    path: str  # "" or "/prefix" (no trailing slash)
    credentials: str | None  # what came before '@', percent-decoded (an invite, a token, user:password)

    @property
    def transport(self) -> str:
        """http or https: what the requests go over."""
        return "https" if self.scheme.endswith("https") else "http"

    @property
    def authority(self) -> str:
        """host[:port] as written in a URL (IPv6 in brackets), without credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host + (f":{self.port}" if self.port is not None else "")

    @property
    def identity(self) -> str:
        """The store this URL names: scheme://host[:port][/path], no credentials (a default port left out)."""
        port = None if self.port == DEFAULT_PORTS[self.transport] else self.port
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + (f":{port}" if port is not None else "") + self.path

    def base(self, suffix: str = "") -> str:
        """The HTTP base URL requests go below: transport://host[:port][/path][suffix]."""
        return f"{self.transport}://{self.authority}{self.path}{suffix}"


def parse_store_url(url: str, what: str = "store") -> StoreURL:
    """`url` (scheme://[credentials@]host[:port][/path]) taken apart; StoreError naming what is wrong."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise StoreError(f"{what} URL is malformed ({exc}): use SCHEME://HOST[:PORT][/PATH]") from None
    if not parts.scheme or not parts.hostname:
        raise StoreError(f"{what} URL has no host: use SCHEME://HOST[:PORT][/PATH]")
    if parts.query or parts.fragment:
        raise StoreError(f"{what} URL has a query or fragment ('?' or '#'), which a store URL cannot have")
    netloc = parts.netloc
    credentials = unquote(netloc.rpartition("@")[0]) if "@" in netloc else None
    return StoreURL(
        scheme=parts.scheme.lower(),
        host=parts.hostname.lower(),
        port=port,
        path=parts.path.rstrip("/"),
        credentials=credentials or None,
    )


def credentials_header(credentials: str) -> str:
    """A URL's credentials as an Authorization header value: USER:PASSWORD as Basic, a lone token as Bearer."""
    if ":" in credentials:
        return "Basic " + base64.b64encode(credentials.encode()).decode()
    return "Bearer " + credentials


def store_identity(url: str) -> str:
    """Which store `url` names, for comparing two URLs: a network store's scheme, host, port and path
    (credentials left out); any other URL (a folder) as it is."""
    if "://" not in url or url.startswith("file:"):
        return url
    try:
        return parse_store_url(url).identity
    except StoreError:
        return url


def same_store(a: str, b: str) -> bool:
    return store_identity(a) == store_identity(b)
