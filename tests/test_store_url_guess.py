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


def test_the_guess_of_a_url_a_colon_short_quotes_no_secret_typed_where_its_host_goes(tmp_path, monkeypatch):
    """An invite whose '@' was written %40 or ':' (`s5+https//INVITE%40host`, `s5+http//INVITE:host:5050`), which
    the URL's own refusal never quotes (check_host, unparsed_refusal), was quoted whole in the guess of the URL a
    ':' short; and `http//INVITE:host:5050` ended in a traceback (the guess read its port: 'host:5050')."""
    monkeypatch.chdir(tmp_path)
    for given, meant in (
        ("s5+https//INVITE%40relay.example", "s5+https://HOST[:PORT]"),
        ("s5+http//INVITE:relay.example:5050", "s5+http://HOST[:PORT]"),
        ("ipfs+rpc+https//[INVITE]:5001", "ipfs+rpc+https://HOST[:PORT]"),
        ("http//INVITE:relay.example:5050", "s5+http://HOST:PORT"),
        ("https//INVITE%40relay.example", "s5+https://HOST:PORT"),
    ):
        message = _refusal(given)
        assert f"did you mean {meant}?" in message and "INVITE" not in message, (given, message)
    assert not os.listdir(tmp_path)


def test_a_store_url_without_its_slashes_names_the_url_meant_without_its_secret(tmp_path, monkeypatch):
    """`http:INVITE@relay.example:5050` (the '//' left out) was told "did you mean s5+http://http:***@relay...?",
    its scheme taken into the host's place; `s5+http:INVITE@HOST:PORT` only that it "has no host", and
    `s5+http:/HOST:PORT` (a '/' short) alike. Each names the URL meant, the invite hidden, nothing made."""
    monkeypatch.chdir(tmp_path)
    for given, meant in (
        ("http:INVITE@relay.example:5050", "s5+http://***@relay.example:5050"),
        ("https:INVITE@relay.example", "s5+https://***@relay.example"),
        ("http:127.0.0.1:5001", "ipfs+http://127.0.0.1:5001"),
        ("s5+http:INVITE@relay.example:5050", "s5+http://***@relay.example:5050"),
        ("s5+https:/relay.example", "s5+https://relay.example"),
        ("ipfs+rpc+https:host:5001", "ipfs+rpc+https://host:5001"),
        ("s5+http:INVITE%40relay.example:5050", "s5+http://HOST[:PORT]"),
        ("http:INVITE:relay.example:5050", "s5+http://HOST:PORT"),
    ):
        message = _refusal(given)
        assert f"did you mean {meant}?" in message and "INVITE" not in message, (given, message)
        assert message.startswith(f"store URL {given.partition(':')[0]}:...: "), message  # (its scheme alone)
    assert not os.listdir(tmp_path)
    assert normalize_store_url("file:/tmp/shared") == "file:///tmp/shared"  # (a file URL so is one: taken as ever)


def test_a_mistyped_store_url_in_config_toml_is_refused_naming_the_file(tmp_path, monkeypatch):
    """`store = "http:INVITE@HOST:PORT"` (or a `stores` list holding such a URL) in config.toml stopped the start with
    "store URL http:...: the '//' after its scheme is left out; ...", naming neither the file nor the key: a
    newcomer who gave no --store could not tell where the URL came from. Named as every other refused setting is."""
    from sessiond.daemon.home import Config

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "config.toml"
    for text in ('store = "http:INVITE@relay.example:5050"\n', 'stores = ["file:///x", "s5+http//INVITE@h:1"]\n'):
        path.write_text(text)
        with pytest.raises(HomeError) as refused:
            Config.load(str(tmp_path))
        message = str(refused.value)
        key = text.split(" ")[0]
        assert message.startswith(f"{path}: {key!r}: store URL ") and "did you mean" in message, message
        assert "INVITE" not in message, message
    path.write_text('store = "file:///x/store"\n')
    assert Config.load(str(tmp_path)).store == "file:///x/store"  # (kept as given: normalized at the start)
    assert sorted(os.listdir(tmp_path)) == ["config.toml"]


def test_a_store_url_a_slash_too_many_names_the_url_meant_without_its_secret(tmp_path, monkeypatch):
    """`s5+http:///relay.example:5050` (a '/' too many) was told only that it "has no host", and
    `http:///relay.example:5050` was told "did you mean s5+http:///relay.example:5050?", a URL refused in its turn;
    an invite whose '@' was typed ':' or %40 (`s5+http:///INVITE:relay.example:5050`) was quoted whole by both, as
    the one '/' short is not. Each names the URL meant, the invite nowhere; a file URL's three slashes are its own."""
    monkeypatch.chdir(tmp_path)
    for given, meant in (
        ("s5+http:///relay.example:5050", "s5+http://relay.example:5050"),
        ("ipfs+rpc+https:////host:5001", "ipfs+rpc+https://host:5001"),
        ("http:///relay.example:5050", "s5+http://relay.example:5050"),
        ("s5+http:///INVITE@relay.example:5050", "s5+http://***@relay.example:5050"),
        ("s5+http:///INVITE:relay.example:5050", "s5+http://HOST[:PORT]"),
        ("s5+https:///INVITE%40relay.example", "s5+https://HOST[:PORT]"),
        ("https:///INVITE:relay.example:5050", "s5+https://HOST:PORT"),
    ):
        message = _refusal(given)
        assert f"did you mean {meant}?" in message and "INVITE" not in message, (given, message)
    assert not os.listdir(tmp_path)
    assert normalize_store_url("file:///tmp/shared") == "file:///tmp/shared"
