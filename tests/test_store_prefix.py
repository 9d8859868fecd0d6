"""A path prefix in a store URL is where the store is mounted (a reverse proxy at https://host/prefix/):
every request of every HTTP store (S5 portal, Kubo RPC, gateway) and of the relay client (its change
feed too) goes below it, against loopback servers that answer only there."""

from __future__ import annotations

from aiohttp import web
from nacl.signing import SigningKey

from conftest import eventually
from servers.kubo import Node, make_gateway_app, make_rpc_app
from servers.s5portal import Portal, Running, make_app
from sessiond.relay.app import Relay
from sessiond.relay.app import make_app as make_relay_app
from sessiond.stores.cid import digest
from sessiond.stores.gateway import GatewayStore
from sessiond.stores.http import RetryPolicy
from sessiond.stores.kubo import KuboStore
from sessiond.stores.registry import RegistryEntry
from sessiond.stores.s5 import S5Store

FAST = RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.05)
PREFIX = "/behind/proxy"
KEY = SigningKey(b"\x07" * 32)


def head(rev: int) -> RegistryEntry:
    return RegistryEntry.create(KEY, rev, b"\x1e" + digest(b"manifest %d" % rev))


async def mounted(app: web.Application) -> Running:
    """`app` served on a free loopback port under PREFIX only: a request outside it is a 404."""
    outer = web.Application()
    outer.add_subapp(PREFIX + "/", app)
    return await Running(outer).start()


async def test_an_s5_portal_under_a_path_prefix(tmp_path):
    portal = Portal()
    running = await mounted(make_app(portal))
    portal.authority = f"127.0.0.1:{running.port}"
    url = f"s5+http://127.0.0.1:{running.port}{PREFIX}/"
    store = S5Store(url, account_seed=b"\x01" * 32, token_dir=str(tmp_path / "tokens"), retry=FAST, timeout=5)
    try:
        assert store.url == f"s5+http://127.0.0.1:{running.port}{PREFIX}"
        h = await store.put(b"an object behind a proxy")
        assert await store.get(h) == b"an object behind a proxy" and await store.has(h)
        await store.set_head(head(1))
        assert await store.get_head(head(1).pk) == head(1)
        paths = {p for _, p, _ in portal.requests}
        assert paths and all(p.startswith(PREFIX + "/s5/") for p in paths), paths
    finally:
        await store.close()
        await running.stop()


async def test_a_relay_and_its_change_feed_under_a_path_prefix(tmp_path):
    running = await mounted(make_relay_app(Relay(str(tmp_path / "relay"), open_registration=True)))
    url = f"s5+http://127.0.0.1:{running.port}{PREFIX}"
    writer = S5Store(url, account_seed=b"\x02" * 32, retry=FAST, timeout=5)
    follower = S5Store(url, account_seed=b"\x03" * 32, retry=FAST, timeout=5)
    try:
        h = await writer.put(b"through the relay")
        assert await follower.get(h) == b"through the relay"
        assert await follower.has_change_feed()  # the relay's feed is found below the prefix too
        await writer.set_head(head(1))
        assert await follower.head_versions() == {}  # its account's feed names only the heads it read
        assert await follower.get_head(head(1).pk) == head(1)  # read with its token: followed
        await writer.set_head(head(2))

        async def moved() -> bool:
            return await follower.head_versions() == {head(1).pk: 2}

        await eventually(moved, what="the feed naming revision 2")
    finally:
        await writer.close()
        await follower.close()
        await running.stop()


async def test_a_kubo_rpc_and_a_gateway_under_a_path_prefix():
    node = Node()
    rpc = await mounted(make_rpc_app(node))
    gw = await mounted(make_gateway_app(node))
    kubo = KuboStore(f"ipfs+http://127.0.0.1:{rpc.port}{PREFIX}", retry=FAST, timeout=5)
    gateway = GatewayStore(f"ipfs+gateway+http://127.0.0.1:{gw.port}{PREFIX}/", retry=FAST, timeout=5)
    try:
        assert kubo.url == f"ipfs+http://127.0.0.1:{rpc.port}{PREFIX}"
        h = await kubo.put(b"a block behind a proxy")
        assert await kubo.get(h) == b"a block behind a proxy" and await kubo.has(h)
        await kubo.set_head(head(1))
        assert await kubo.get_head(head(1).pk) == head(1)
        assert await gateway.get(h) == b"a block behind a proxy"
        assert await gateway.get_head(head(1).pk) == head(1)
        paths = [p for _, p, _ in node.requests]
        assert paths and all(p.startswith((PREFIX + "/api/v0/", PREFIX + "/ipfs/", PREFIX + "/ipns/")) for p in paths)
    finally:
        await kubo.close()
        await gateway.close()
        await rpc.stop()
        await gw.stop()


async def test_a_pinning_service_under_a_path_prefix(tmp_path):
    """A Kubo store under a prefix, pinned on a service under a prefix (the service's URL was already used
    as given; the Kubo RPC's prefix was dropped)."""
    from servers.pinning import Service
    from servers.pinning import make_app as make_pinning_app
    from sessiond.stores.pinning import PinningStore

    node, svc = Node(), Service()
    rpc = await mounted(make_rpc_app(node))
    service = await mounted(make_pinning_app(svc))
    (tmp_path / "token").write_text("s3cret-token\n")
    kubo = KuboStore(f"ipfs+http://127.0.0.1:{rpc.port}{PREFIX}", retry=FAST, timeout=5)
    store = PinningStore(
        kubo, f"http://127.0.0.1:{service.port}{PREFIX}/", token_file=str(tmp_path / "token"), retry=FAST, timeout=5
    )
    try:
        await store.put(b"pinned behind a proxy")
        assert await store.flush() == 1 and store.status()["last_error"] is None
        assert svc.requests and all(path.startswith(PREFIX + "/pins") for _, path in svc.requests)
    finally:
        await store.close()
        await rpc.stop()
        await service.stop()
