"""The store URL a mistyped one most likely meant, for the refusal of it (daemon/home.py normalize_store_url):
a file URL a slash short (`file://tmp/shared`: `tmp` read as a host), and a relay's or a portal's address given as
a browser takes it (`http://HOST:5050`) or with the network alone (`s5://HOST`). Every URL it names is shown with
its credentials hidden (storage/redact.py)."""

from __future__ import annotations

import os
from urllib.parse import urlparse

from ..storage.redact import shown_url

KUBO_RPC_PORT = 5001  # Kubo's RPC port: an http:// URL to it is a Kubo node's, not a relay's

SCHEMES_SAID = (
    "file:///path/to/folder, s5+http://HOST:PORT (your relay, `sessiond serve`), s5+https://PORTAL,"
    " ipfs+http://HOST:PORT (a Kubo node) or ipfs+https://GATEWAY"
)


def file_url_meant(netloc: str, path: str) -> str:
    """What `file://NETLOC/PATH` was meant to be: the absolute folder a slash short, or one relative to here."""
    absolute = "file:///" + (netloc + path).lstrip("/")
    here = "file://" + os.path.abspath(netloc + path)
    return f"did you mean {absolute}? (a folder relative to here: {here})"


def network_url_meant(url: str) -> str:
    """The store URL a network address with a scheme no store has most likely meant, as `; did you mean URL?`
    ('' for a scheme that is no such slip)."""
    parsed = urlparse(url)
    rest = shown_url(url).split("://", 1)[-1]
    if parsed.scheme in ("http", "https"):
        kubo = parsed.scheme == "http" and parsed.port == KUBO_RPC_PORT
        first, other = ("ipfs+http", "s5+http") if kubo else (f"s5+{parsed.scheme}", "ipfs+http")
        return f"; did you mean {first}://{rest}? ({other}://{rest} if it is a {'relay' if kubo else 'Kubo node'})"
    if parsed.scheme in ("s5", "ipfs"):
        return f"; did you mean {parsed.scheme}+https://{rest}?"
    return ""
