"""Share codes name a network plus hints (sync/locations.py, docs/FORMATS.md "Share codes"): what a code
carries for loopback, private and credentialed store URLs, and imports through the hint, through
--store when no hint serves, and of codes made the old way (a store URL)."""

from __future__ import annotations

import os

import pytest

from conftest import DaemonProc, cli_json, run_cli
from sessiond.stores import Store
from sessiond.sync.locations import hint_of, is_loopback, locations_of
from sessiond.sync.mirror import MirrorStore
from sessiond.sync.sharecode import ShareCode, decode
from test_mirror import Relay


class Named(Store):
    """Only a URL: what locations_of reads of a store."""

    def __init__(self, url: str):
        self.url = url

    async def put(self, data):  # pragma: no cover - never called
        raise NotImplementedError

    get = has = get_head = set_head = put


async def test_hints_carry_no_credentials_no_rpc_and_no_loopback_beside_a_real_address(tmp_path):
    assert hint_of("s5+http://INVITE@127.0.0.1:7000") == "s5+http://127.0.0.1:7000"
    assert hint_of("s5+https://tok:pw@relay.example.org/") == "s5+https://relay.example.org/"
    assert hint_of("ipfs+http://127.0.0.1:5001") is None  # a Kubo node's RPC: the sharer's private API
    assert hint_of("ipfs+https://gw.example.org") == "ipfs+https://gw.example.org"
    assert hint_of("file:///srv/shared") == "file:///srv/shared"
    assert (
        is_loopback("s5+http://127.0.0.5:1") and is_loopback("s5+http://[::1]:1") and is_loopback("s5+http://localhost")
    )
    assert not is_loopback("s5+https://relay.example.org") and not is_loopback("file:///srv")
    assert await locations_of(Named("s5+http://127.0.0.1:7000")) == [("s5", "s5+http://127.0.0.1:7000")]  # the only one
    mirror = MirrorStore([Named("s5+https://portal.example.org"), Named("s5+http://127.0.0.1:7000")], None)  # type: ignore[arg-type]
    assert await locations_of(mirror) == [("s5", "s5+https://portal.example.org"), ("s5", None)]
    mirror = MirrorStore([Named("file:///srv/shared"), Named("s5+http://localhost:7000")], None)  # type: ignore[arg-type]
    assert await locations_of(mirror) == [("folder", "file:///srv/shared"), ("s5", "s5+http://localhost:7000")]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A loopback relay (the only address it has), a daemon A syncing through it, a daemon B with a
    folder store of its own: one of each for the module."""
    tmp = tmp_path_factory.mktemp("loc")
    relay = Relay(str(tmp / "relay")).start()
    a = DaemonProc(str(tmp / "a"), relay.url).start()
    b = DaemonProc(str(tmp / "b")).start()
    yield relay, a, b
    for d in (a, b):
        d.stop()
    relay.close()


def shared(a: DaemonProc, text: str) -> tuple[str, dict]:
    ca = a.client()
    sid = ca.create_session(name=text)["id"]
    ca.append(sid, "user", text)
    return sid, ca.share(sid)


def test_a_code_names_the_relay_and_imports_through_its_hint(world):
    relay, a, b = world
    sid, share = shared(a, "through the hint")
    assert share["locations"] == [{"network": "relay", "hint": relay.url}]  # the relay is reachable only there
    code = decode(share["code"])
    assert code.store_url is None and code.places() == [("relay", relay.url)]
    text = run_cli(a.home, "share", sid, check=True).stderr
    assert f"# found through: relay ({relay.url})" in text
    got = cli_json(b.home, "import", input=share["code"])  # b's own store is a folder: the hint serves
    assert got["session"] == sid and b.client().messages(sid)["messages"][0]["content"] == "through the hint"


def test_no_usable_hint_asks_for_store_and_old_codes_still_import(world):
    relay, a, b = world
    sid, share = shared(a, "by --store")
    c = decode(share["code"])
    bare = ShareCode(c.session_id, c.session_key, c.announce_pk, locations=(("relay", None),)).encode()
    res = run_cli(b.home, "import", input=bare)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "--store" in res.stderr and "relay" in res.stderr
    with pytest.raises(Exception) as e:  # the socket API: a 4xx saying the same, naming its own field
        b.client().import_code(bare)
    said = str(e.value)
    assert getattr(e.value, "status", None) == 422 and "the import's `store`" in said and "--store" not in said, said
    assert cli_json(b.home, "import", "--store", relay.url, input=bare)["session"] == sid

    sid, share = shared(a, "the old way")
    c = decode(share["code"])
    old = ShareCode(c.session_id, c.session_key, c.announce_pk, relay.url).encode()  # "u": a store URL
    assert b.client().import_code(old)["session"] == sid
    assert b.client().messages(sid)["messages"][0]["content"] == "the old way"


def test_a_hint_to_a_folder_that_is_not_here_is_not_followed(world, tmp_path):
    _, a, b = world
    sid, share = shared(a, "nowhere")
    c = decode(share["code"])
    missing = "file://" + str(tmp_path / "not-here")
    code = ShareCode(c.session_id, c.session_key, c.announce_pk, locations=(("folder", missing),)).encode()
    res = run_cli(b.home, "import", input=code)
    assert res.returncode != 0 and "--store" in res.stderr
    assert not os.path.exists(missing)  # a code makes no folders


def test_import_store_must_be_a_store_url(world):
    _, a, b = world
    res = run_cli(b.home, "import", "--store", "gopher://x", input="sessiond1aaaa")
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1 and "gopher" in res.stderr
