"""A store URL mistyped where its scheme meets the rest (`SCHEME//HOST`, a ':' short; `SCHEME:HOST`, the '//' left
out) is refused naming the URL most likely meant, for every scheme a store has, an invite or a password in it
quoted nowhere (daemon/urlguess.py). In-process: normalize_store_url is what `start`, `daemon` and `import --store`
refuse such a URL with, before anything starts."""

from __future__ import annotations

import os

import pytest

from sessiond.daemon.home import HomeError, normalize_store_url
from sessiond.stores import NETWORK_SCHEMES


def _refusal(url: str) -> str:
    with pytest.raises(HomeError) as refused:
        normalize_store_url(url)
    return str(refused.value)


def test_a_store_url_a_colon_short_names_the_url_meant_for_every_scheme(tmp_path, monkeypatch):
    """`ipfs+rpc+https//host:5001` (the ':' left out) was taken for a folder's path, ./ipfs+rpc+https/host:5001, with
    no word: the ':'-short guess knew s5+http(s), ipfs+http(s) and http(s) alone, not ipfs+rpc+http(s) nor
    ipfs+gateway+http(s)."""
    monkeypatch.chdir(tmp_path)
    for scheme in NETWORK_SCHEMES:
        message = _refusal(f"{scheme}//host:5001")
        assert f"did you mean {scheme}://host:5001?" in message, (scheme, message)
    assert not os.listdir(tmp_path)
