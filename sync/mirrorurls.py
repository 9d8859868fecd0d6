"""A store identity that may name a mirror: several store URLs joined by SEPARATOR (`stores = [...]` in
the config, or a session's recorded store), and which stores two such identities name."""

from __future__ import annotations

from ..stores.base import StoreError
from ..stores.urls import parse_store_url, store_identity

SEPARATOR = "\n"  # between the URLs of a mirror's identity (a URL holds no newline)


def mirror_urls(url: str) -> list[str]:
    """The store URLs of a store identity: one URL, or a mirror's URLs joined by SEPARATOR."""
    return [u for u in url.split(SEPARATOR) if u]


def stores_identity(url: str) -> str:
    """Which store(s) a store identity names, credentials left out (stores/urls.py): two URLs that differ
    only in an invite or a password are the same store, and a mirror is the same mirror."""
    return SEPARATOR.join(store_identity(u) for u in mirror_urls(url))


def same_stores(a: str, b: str) -> bool:
    return stores_identity(a) == stores_identity(b)


def credentials_of(url: str) -> tuple[str | None, ...]:
    """The credentials each URL of a store identity carries (None for none, or for a folder)."""
    out: list[str | None] = []
    for u in mirror_urls(url):
        try:
            out.append(parse_store_url(u).credentials)
        except StoreError:
            out.append(None)
    return tuple(out)
