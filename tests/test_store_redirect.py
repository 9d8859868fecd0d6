"""A storage host that redirects its requests to another server (a portal moved, a proxy sending us
elsewhere). On main the HTTP client followed every redirect wherever it pointed: an upload went, in full, to
the other server, without this device's token (aiohttp drops Authorization across origins), whose 401 was
then said as this store refusing our credentials after a fresh login; and a redirect to a server that does
not answer was said as the store being down ("is the server running?"). A redirect within the store's own
server (the portal's /s5/blob/ to /s5/download/) is still followed, for reads; one to another server, or of
a write, is not: it is said as what it is, where it points and what to do, and a sync waiting on it ends at
once (waiting does not move a store back), its writes kept for when the store answers again."""

from __future__ import annotations

import json
import time

from conftest import run_cli, wait_for
from portalstore import failure_of, one_session, s5, served_portal
from sessiond.stores.cid import digest
from sessiond.stores.errors import StoreRedirected, describe_failure, failure_code, settled
from sessiond.stores.http import HttpClient


async def test_a_redirect_to_another_server_is_not_followed_and_says_where(tmp_path):
    async with served_portal() as p, served_portal() as elsewhere:
        store = s5(p, tmp_path, "a")
        h = await store.put(b"an object")
        p.faults.redirect = f"http://{elsewhere.authority}"
        asked = len(elsewhere.requests)
        try:
            for call in [store.put(b"another"), store.get(h)]:
                failure = await failure_of(call, Exception)
                said = describe_failure(failure, "s5+http://portal")
                assert failure_code(failure) == "redirected" and settled(failure), said
                assert f"http://{elsewhere.authority}/s5/" in said and "--change-store" in said, said
                assert "refusing our credentials" not in said and "running" not in said, said
        finally:
            await store.close()
        assert len(elsewhere.requests) == asked  # main: the upload went to the other server
        assert not any(r[1].startswith("/s5/upload") for r in elsewhere.requests)


async def test_a_redirect_within_the_store_s_own_server_is_followed(tmp_path):
    async with served_portal() as p:
        store = s5(p, tmp_path, "a")
        try:
            h = await store.put(b"read through the blob route")
        finally:
            await store.close()
        from sessiond.stores.s5 import portal_raw_cid

        client = HttpClient(f"http://{p.authority}")
        try:
            reply = await client.request("GET", f"/s5/blob/{portal_raw_cid(h)}", headers=store._auth())
        finally:
            await client.close()
        assert reply.body == b"read through the blob route"


def test_sync_wait_on_a_redirecting_store_ends_at_once_and_the_writes_go_once_it_answers(make_daemon, portal):
    p, url = portal
    d, c, sid = one_session(make_daemon, url, "moved")
    assert run_cli(d.home, "sync", "--wait", "--timeout", "20").returncode == 0
    p.faults.redirect = "http://127.0.0.1:9"  # the discard port: nothing answers there
    c.append(sid, "user", "two")
    started = time.monotonic()
    res = run_cli(d.home, "sync", "--wait", "--timeout", "60")
    assert res.returncode == 1, res.stdout + res.stderr
    assert time.monotonic() - started < 30  # ends once the push meets it (main: waited out the timeout)
    said = res.stdout + res.stderr
    assert "redirect" in said and "http://127.0.0.1:9/s5/" in said, said  # main: "is the server running"
    res = run_cli(d.home, "doctor", "--json")
    found = [f for f in json.loads(res.stdout)["findings"] if "redirect" in f["message"]]
    assert found and url.split("//")[1] in found[0]["message"], json.loads(res.stdout)["findings"]
    assert c.get_session(sid)["sync"]["pending"] > 0
    p.faults.redirect = None
    assert run_cli(d.home, "sync", "--wait", "--timeout", "20").returncode == 0
    wait_for(lambda: c.get_session(sid)["sync"]["pending"] == 0, timeout=20, what="the writes kept, pushed")


async def test_a_public_gateway_redirecting_its_reads_elsewhere_is_followed_a_credentialed_one_is_not():
    """A read carrying no credentials is followed wherever it is redirected (a public gateway's path redirected
    to its subdomain, or to another of its servers): what comes back is checked by its hash. With credentials
    for the gateway, the same redirect is not followed: they are for that server alone."""
    from aiohttp import web

    from servers.kubo import start_node
    from servers.s5portal import Running
    from sessiond.stores.gateway import GatewayStore

    node, rpc, gw = await start_node()
    app = web.Application()

    async def elsewhere(request: web.Request):
        raise web.HTTPFound(f"http://127.0.0.1:{gw.port}{request.path_qs}")

    app.router.add_get("/{tail:.*}", elsewhere)
    redirector = await Running(app).start()
    data = b"a block behind a redirect"
    node.blocks[digest(data)] = data
    public = GatewayStore(f"ipfs+gateway+http://127.0.0.1:{redirector.port}", timeout=5)
    guarded = GatewayStore(f"ipfs+gateway+http://a-token@127.0.0.1:{redirector.port}", timeout=5)
    try:
        assert await public.get(digest(data)) == data
        failure = await failure_of(guarded.get(digest(data)), StoreRedirected)
        assert "a-token" not in str(failure), failure
    finally:
        for store in (public, guarded):
            await store.close()
        for server in (redirector, rpc, gw):
            await server.stop()
