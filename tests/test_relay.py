"""`sessiond serve` (relay/): the S5 portal subset through the unchanged S5 store, over real TCP on
127.0.0.1 (random ports): objects, heads, the challenge login, closed registration and invites,
quotas, deletes, TLS, the change feed and its latency; and two real daemons syncing through the
relay started as a real `sessiond serve` process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time

import aiohttp
import pytest
from nacl.signing import SigningKey

from conftest import eventually, relay_served, run_cli, wait_for
from servers.s5portal import start_portal
from sessiond.relay.accounts import new_invite
from sessiond.relay.app import Relay, run
from sessiond.stores import ObjectMissing, StaleHead
from sessiond.stores.cid import BlobId, b58encode, digest
from sessiond.stores.errors import AuthRefused, StoreFull
from sessiond.stores.http import RetryPolicy
from sessiond.stores.registry import RegistryEntry
from sessiond.stores.s5 import S5Store, b64url, portal_raw_cid

FAST = RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.05)


class Served:
    """A relay served in the test's event loop on a free port of 127.0.0.1."""

    def __init__(self, data: str, **kw):
        self.data, self.kw = data, kw
        self.port = 0
        self.relay: Relay | None = None

    async def start(self, ssl_context=None, port: int = 0) -> Served:
        self.relay = Relay(self.data, **self.kw)
        self._stop = asyncio.Event()
        ready = asyncio.Event()

        def on_ready(url, port):
            self.url, self.port = url, port
            ready.set()

        self._task = asyncio.create_task(
            run(self.relay, "127.0.0.1", port, ssl_context=ssl_context, on_ready=on_ready, stop=self._stop)
        )
        await asyncio.wait_for(ready.wait(), 10)
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(self._task, 10)


@pytest.fixture
async def relay(tmp_path):
    made: list[Served] = []

    async def make(**kw) -> Served:
        s = await Served(str(tmp_path / "relay"), **kw).start()
        made.append(s)
        return s

    yield make
    for s in made:
        if not s._task.done():
            await s.stop()


_n = 0


def store_for(served: Served, tmp_path, *, seed: bytes | None = None, invite: str | None = None, **kw) -> S5Store:
    global _n
    _n += 1
    seed = seed or bytes([_n]) * 32
    userinfo = f"{invite}@" if invite else ""
    return S5Store(
        f"s5+http://{userinfo}127.0.0.1:{served.port}",
        account_seed=seed,
        token_dir=str(tmp_path / f"tokens-{seed.hex()[:8]}"),
        retry=FAST,
        timeout=10,
        **kw,
    )


def head(revision: int, key: SigningKey | None = None) -> RegistryEntry:
    key = key or SigningKey(b"\x07" * 32)
    return RegistryEntry.create(key, revision, b"\x1e" + digest(str(revision).encode()))


def parked_waits(served: Served) -> list[float]:
    """The `wait` of each change-feed request the relay holds open now, waiting for a change."""
    feed = served.relay.feed
    real = feed.wait
    parked: list[float] = []

    async def wait(account, cursor, epoch, timeout):
        reset, _, changes = feed.since(account, cursor, epoch)
        parks = not (changes or reset or timeout <= 0)  # as Feed.wait decides
        if parks:
            parked.append(timeout)
        try:
            return await real(account, cursor, epoch, timeout)
        finally:
            if parks:
                parked.remove(timeout)

    feed.wait = wait
    return parked


async def raw(served: Served, method: str, path: str, token: str | None = None, **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, f"http://127.0.0.1:{served.port}{path}", headers=headers, **kw) as r,
    ):
        return r.status, await r.read()


async def test_objects_and_heads_through_the_s5_store(relay, tmp_path):
    served = await relay(open_registration=True)
    store = store_for(served, tmp_path)
    try:
        data = b"hello relay" * 100
        h = await store.put(data)  # the S5 store checks the CID the relay answers against its own
        assert h == digest(data)
        assert await store.get(h) == data and await store.has(h)
        assert not await store.has(digest(b"nope"))
        with pytest.raises(ObjectMissing):
            await store.get(digest(b"nope"))
        on_disk = tmp_path / "relay" / "objects" / h.hex()[:2] / h.hex()
        assert on_disk.read_bytes() == data
        # the relay computes the CID from the bytes; downloads are verbatim, by any CID form
        status, body = await raw(served, "POST", "/s5/upload", store._token, data=b"raw body upload")
        assert status == 200
        assert json.loads(body)["cid"] == "z" + b58encode(BlobId.of(b"raw body upload").to_legacy_bytes())
        for cid in (portal_raw_cid(h), str(BlobId.of(data)), BlobId.of(data).to_base58()):
            assert await raw(served, "GET", f"/s5/download/{cid}", store._token) == (200, data)
        assert (await raw(served, "GET", f"/s5/download/{portal_raw_cid(h)}"))[0] == 401  # accounts only

        assert await store.get_head(head(1).pk) is None
        await store.set_head(head(1))
        await store.set_head(head(2))
        await store.set_head(head(2))  # the same entry again: fine
        assert await store.get_head(head(1).pk) == head(2)
        # tokens are kept hashed: no file of the relay holds the token in clear
        for root, _, files in os.walk(tmp_path / "relay"):
            for f in files:
                assert store._token.encode() not in open(os.path.join(root, f), "rb").read()
    finally:
        await store.close()


async def test_forged_and_rolled_back_heads_are_refused(relay, tmp_path):
    served = await relay(open_registration=True)
    store = store_for(served, tmp_path)
    try:
        await store.set_head(head(5))
        with pytest.raises(StaleHead):
            await store.set_head(head(3))
        e = head(6)
        doc = {
            "pk": b64url(e.pk),
            "revision": 6,
            "data": b64url(e.data),
            "signature": b64url(bytes([e.signature[0] ^ 1]) + e.signature[1:]),
        }
        status, body = await raw(served, "POST", "/s5/registry", store._token, json=doc)
        assert status == 400 and b"signature" in body
        doc = {**doc, "signature": b64url(e.signature), "revision": 7}  # a signature for another revision
        assert (await raw(served, "POST", "/s5/registry", store._token, json=doc))[0] == 400
        doc = {
            "pk": b64url(head(4).pk),
            "revision": 4,
            "data": b64url(head(4).data),
            "signature": b64url(head(4).signature),
        }
        status, body = await raw(served, "POST", "/s5/registry", store._token, json=doc)
        assert status == 409 and b"not newer" in body
        assert (await raw(served, "POST", "/s5/registry", None, json=doc))[0] == 401
        for bad in (
            b"not json",
            b"[1]",
            json.dumps({**doc, "revision": "4"}).encode(),
            json.dumps({**doc, "extra": 1}).encode(),
            json.dumps({**doc, "pk": "!!"}).encode(),
        ):
            assert (await raw(served, "POST", "/s5/registry", store._token, data=bad))[0] == 400
        assert (await raw(served, "GET", "/s5/registry?pk=AAAA"))[0] == 400
        assert (await raw(served, "GET", "/s5/download/notacid", store._token))[0] == 400
        assert await store.get_head(e.pk) == head(5)
    finally:
        await store.close()


async def test_registration_closed_without_an_invite_and_invites_are_one_time(relay, tmp_path):
    served = await relay()
    stranger = store_for(served, tmp_path)
    with pytest.raises(AuthRefused, match="invite"):
        await stranger.put(b"x")
    assert os.listdir(tmp_path / "relay" / "accounts") == []

    code = new_invite(str(tmp_path / "relay"))
    device = store_for(served, tmp_path, invite=code)
    again = store_for(served, tmp_path, invite=code)  # another key with the same, spent, invite
    try:
        assert code not in device.url and device.url == f"s5+http://127.0.0.1:{served.port}"
        await device.put(b"with an invite")
        with pytest.raises(AuthRefused, match="already used"):
            await again.put(b"x")
        assert len(os.listdir(tmp_path / "relay" / "accounts")) == 1
        # the registered device logs in again later without the invite
        later = store_for(served, tmp_path, seed=None, invite=None)
        later._key = device._key
        assert await later.get(digest(b"with an invite")) == b"with an invite"
        await later.close()
    finally:
        for s in (stranger, device, again):
            await s.close()


async def test_quota_per_account(relay, tmp_path):
    served = await relay(open_registration=True, quota=1000)
    a, b = store_for(served, tmp_path), store_for(served, tmp_path)
    try:
        await a.put(b"a" * 600)
        await a.put(b"a" * 600)  # already kept for this account: no more storage
        with pytest.raises(StoreFull, match="quota"):  # (507: the account has no room; not the object too large)
            await a.put(b"b" * 600)
        await b.put(b"b" * 600)  # another account has its own quota
        status, _ = await raw(served, "POST", "/s5/upload", a._token, data=b"z" * ((1 << 20) + 1))
        assert status == 413
        form = aiohttp.FormData()
        form.add_field("file", b"z" * (3 << 20), filename="blob", content_type="application/octet-stream")
        try:
            status, _ = await raw(served, "POST", "/s5/upload", a._token, data=form)
        except aiohttp.ClientError:
            status = 413  # the relay answered and closed before the whole body was sent
        assert status == 413
        assert sorted(served.relay.objects.used.values()) == [600, 600]  # refused uploads took nothing
    finally:
        await a.close()
        await b.close()


async def test_nothing_deletable_by_another_account(relay, tmp_path):
    served = await relay(open_registration=True, quota=1000)
    a, b = store_for(served, tmp_path), store_for(served, tmp_path)
    try:
        h = await a.put(b"a's object")
        await b.put(b"b's")
        cid = portal_raw_cid(h)
        assert (await raw(served, "DELETE", f"/s5/delete/{cid}", b._token))[0] == 404
        assert (await raw(served, "DELETE", f"/s5/delete/{cid}"))[0] == 401
        assert await b.get(h) == b"a's object"
        await b.put(b"a's object")  # b keeps it too: a's delete removes only a's pin
        assert (await raw(served, "DELETE", f"/s5/delete/{cid}", a._token))[0] == 204
        assert await a.get(h) == b"a's object"
        assert (await raw(served, "DELETE", f"/s5/delete/{cid}", b._token))[0] == 204
        with pytest.raises(ObjectMissing):
            await a.get(h)
        await a.put(b"x" * 990)  # a's quota was given back by the delete
    finally:
        await a.close()
        await b.close()


async def test_gc_frees_only_this_account_s_objects_on_the_relay(relay, tmp_path):
    """Store.free (what `sessiond gc` calls) through the relay: a dry run counts and deletes nothing;
    then this account's objects go, with their sizes; another account's object is never freed."""
    served = await relay(open_registration=True)
    a, b = store_for(served, tmp_path), store_for(served, tmp_path)
    try:
        mine = [await a.put(b"a's object %d" % i) for i in range(3)]
        theirs = await b.put(b"b's object")
        dry = await a.free(mine, dry_run=True)
        assert (dry.objects, dry.nbytes, dry.gone) == (3, sum(len(b"a's object 0") for _ in mine), [])
        assert all([await a.has(h) for h in mine])
        done = await a.free([*mine, theirs])
        assert (done.how, done.objects, done.nbytes) == ("deleted", 3, dry.nbytes)
        assert not any([await a.has(h) for h in mine])
        assert await a.get(theirs) == b"b's object"  # not a's to free: the relay refuses, nothing is lost
    finally:
        await a.close()
        await b.close()


async def test_state_survives_a_restart(relay, tmp_path):
    served = await relay(open_registration=True)
    store = store_for(served, tmp_path)
    try:
        h = await store.put(b"kept")
        await store.set_head(head(3))
        await served.stop()
        again = await relay(open_registration=False)
        store2 = store_for(again, tmp_path, seed=None)
        store2._key, store2._token = store._key, store._token  # the same device, its token from before
        assert await store2.get(h) == b"kept"
        assert await store2.get_head(head(3).pk) == head(3)
        with pytest.raises(StaleHead):
            await store2.set_head(head(2))
        await store2.close()
    finally:
        await store.close()


def self_signed(folder) -> tuple[str, str] | None:
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    if shutil.which("openssl") is None:
        return None
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls(tmp_path):
    made = self_signed(tmp_path)
    if made is None:
        pytest.skip("no openssl to make a certificate with")
    cert, key = made
    from sessiond.relay.app import tls_context

    served = await Served(str(tmp_path / "relay"), open_registration=True).start(tls_context(cert, key))
    try:
        assert served.url.startswith("s5+https://127.0.0.1:")
        store = S5Store(served.url, account_seed=b"\x05" * 32, token_dir=str(tmp_path / "t"), retry=FAST, timeout=5)
        trust = ssl.create_default_context(cafile=cert)
        store.http._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust))
        try:
            h = await store.put(b"over TLS")
            assert await store.get(h) == b"over TLS"
            await store.set_head(head(1))
            assert await store.get_head(head(1).pk) == head(1)
        finally:
            await store.close()
        async with aiohttp.ClientSession() as s:  # plain HTTP to the TLS port gets nowhere
            with pytest.raises(aiohttp.ClientError):
                async with s.get(f"http://127.0.0.1:{served.port}/s5/registry?pk=x") as r:
                    await r.read()
    finally:
        await served.stop()


async def test_change_feed_reaches_a_follower_at_once(relay, tmp_path):
    served = await relay(open_registration=True)
    parked = parked_waits(served)
    writer, follower = store_for(served, tmp_path), store_for(served, tmp_path)
    try:
        await writer.set_head(head(1))
        assert await follower.head_versions() == {}  # the follower's account follows no head yet
        assert await follower.get_head(head(1).pk) == head(1)  # read with its token: followed from now on
        other = SigningKey(b"\x09" * 32)
        assert await follower.get_head(head(1, other).pk) is None  # not set yet, followed all the same
        for rev, entry in ((2, head(2)), (1, head(1, other)), (3, head(3))):
            if rev == 2:  # the follower's long-poll is waiting on the relay (the next ones: as it comes)
                await eventually(lambda: parked, what="the follower's long-poll waiting")
            await writer.set_head(entry)
            set_at = time.monotonic()
            # At once: the relay answers the parked long-poll on the set; without that, the follower would
            # hear of it when its long-poll (7 s) ends. (Typically a few ms; the bound leaves room for a
            # loaded machine, which 0.1 s did not.)
            while (await follower.head_versions()).get(entry.pk) != rev:
                assert time.monotonic() - set_at < 2, "the follower was not told of the new head at once"
                await asyncio.sleep(0.002)  # the poll interval (the deadline is the assert above)
        # the raw feed: a long-poll waiting on a cursor answers as soon as a head is set
        token = writer._token
        status, body = await raw(served, "GET", "/s5/registry/changes?since=0", token)
        doc = json.loads(body)
        assert doc["reset"] and {c["pk"] for c in doc["changes"]} == {b64url(head(1).pk), b64url(head(1, other).pk)}
        waiting = asyncio.create_task(
            raw(served, "GET", f"/s5/registry/changes?since={doc['cursor']}&epoch={doc['epoch']}&wait=20", token)
        )
        await eventually(lambda: 20 in parked, what="the raw long-poll waiting")  # (the follower's waits 7 s)
        assert not waiting.done()
        t0 = time.monotonic()
        await writer.set_head(head(4))
        status, body = await asyncio.wait_for(waiting, 5)
        assert time.monotonic() - t0 < 2  # answered on the set, not when its wait (20 s) ends
        doc = json.loads(body)
        assert not doc["reset"] and doc["changes"] == [{"pk": b64url(head(4).pk), "revision": 4}]
        assert (await raw(served, "GET", "/s5/registry/changes?since=0"))[0] == 401
        assert (await raw(served, "GET", "/s5/registry/changes?since=x", token))[0] == 400
    finally:
        await writer.close()
        await follower.close()


async def test_a_store_without_the_feed_keeps_working(tmp_path):
    p, running = await start_portal()
    store = S5Store(
        f"s5+http://127.0.0.1:{running.port}",
        account_seed=b"\x01" * 32,
        token_dir=str(tmp_path / "t"),
        retry=FAST,
        timeout=5,
    )
    try:
        assert await store.head_versions() is None
        assert await store.head_versions() is None
        await store.set_head(head(1))
        assert await store.get_head(head(1).pk) == head(1)
        assert sum(path == "/s5/registry/changes" for _, path, _ in p.requests) == 1  # asked once only
    finally:
        await store.close()
        await running.stop()


# ------------------------------------------------------------------------ the real `sessiond serve`


@pytest.fixture
def relay_process(tmp_path):
    data, log_path = str(tmp_path / "relay-data"), str(tmp_path / "relay.log")
    with relay_served(data, "--access-log", log_path=log_path) as info:
        yield data, info, log_path


def test_serve_invite_cli_and_bad_flags(tmp_path):
    data = str(tmp_path / "d")
    out = run_cli(None, "serve", "invite", "--data", data, "--json", check=True)
    code = json.loads(out.stdout)["invite"]
    assert len(os.listdir(os.path.join(data, "invites"))) == 1
    # kept as its SHA-256 only: no file of the relay holds the code, in its name or its bytes
    for root, _, files in os.walk(data):
        for f in files:
            assert code not in f and code.encode() not in open(os.path.join(root, f), "rb").read(), f
    for args, what in ((["--listen", "nowhere"], "HOST:PORT"), (["--cert", "x.pem"], "--cert and --key")):
        res = run_cli(None, "serve", "--data", data, *args)
        assert res.returncode == 2 and what in res.stderr and "Traceback" not in res.stderr
        res = run_cli(None, "serve", "--data", data, *args, "--json")  # with --json, the error is also JSON
        assert res.returncode == 2 and what in json.loads(res.stdout)["error"]["message"]
    with socket.socket() as taken:  # a port another program holds
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        res = run_cli(None, "serve", "--data", data, "--listen", listen, "--json")
    assert res.returncode == 2 and f"cannot listen on {listen}" in json.loads(res.stdout)["error"]["message"]


def contents(d, sid):
    return [(m["role"], m["content"]) for m in d.client().messages(sid, limit=100_000)["messages"]]


def test_two_daemons_sync_through_sessiond_serve(make_daemon, relay_process):
    data, info, log_path = relay_process
    assert info["url"] == f"s5+http://127.0.0.1:{info['port']}"
    host = info["url"].split("://", 1)[1]
    invites = [run_cli(None, "serve", "invite", "--data", data, check=True).stdout.strip() for _ in range(2)]
    a = make_daemon(f"s5+http://{invites[0]}@{host}").start()
    b = make_daemon()  # its store, with its invite, in config.toml rather than in argv
    os.makedirs(b.home, mode=0o700)
    with open(os.path.join(b.home, "config.toml"), "w") as f:
        f.write(f'store = "s5+http://{invites[1]}@{host}"\n')
    b.start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="relayed", initial_messages=[{"role": "user", "content": "hello"}])["id"]
    ca.append_many(sid, [{"role": "user", "content": f"a{i}"} for i in range(5)])
    share = ca.share(sid, write=True)
    assert invites[0] not in json.dumps(share)
    cb.import_code(share["code"])
    assert contents(b, sid) == contents(a, sid)
    assert len(os.listdir(os.path.join(data, "accounts"))) == 2
    for i in range(3):  # the follower hears of each new message through the feed, at once
        t0 = time.monotonic()
        ca.append(sid, "user", f"news {i}")
        wait_for(lambda: contents(b, sid)[-1:] == [("user", f"news {i}")], timeout=10, interval=0.01)
        # Not when B's long-poll (23 s) ends: the relay answers it on A's push. (A fraction of a second;
        # the bound leaves room for a loaded machine, which 1 s did not: README's row is the measured figure.)
        assert time.monotonic() - t0 < 5
    cb.append(sid, "assistant", "from b")
    wait_for(lambda: contents(a, sid)[-1:] == [("assistant", "from b")], timeout=10)
    # the daemons learnt of new heads from the change feed: long-polls, held open by the relay
    log = open(log_path).read()
    assert log.count("GET /s5/registry/changes?") >= 4 and "&wait=0 " in log
    assert re.search(r"changes\?since=\d+&wait=[1-9]", log)  # a long-poll, held open until a head changed
    assert invites[0] not in log and invites[1] not in log and "Bearer" not in log


async def test_bad_logins_are_clear_4xx_and_create_nothing(relay, tmp_path):
    served = await relay(open_registration=True)
    key = SigningKey(b"\x11" * 32)
    pub = b64url(b"\xed" + bytes(key.verify_key))
    assert (await raw(served, "GET", "/s5/account/login?pubKey=AAAA"))[0] == 400
    assert (await raw(served, "GET", "/s5/account/register"))[0] == 400
    body = {
        "pubKey": pub,
        "response": b64url(b"\x01" * 65),
        "signature": b64url(b"\x00" * 64),
        "label": "x",
        "email": None,
    }
    status, text = await raw(served, "POST", "/s5/account/register", json=body)
    assert status == 400 and b"no challenge" in text
    status, text = await raw(served, "GET", f"/s5/account/register?pubKey={pub}")
    challenge = __import__("base64").urlsafe_b64decode(json.loads(text)["challenge"] + "=")
    import blake3

    response = b"\x01" + challenge + blake3.blake3(b"elsewhere.example").digest()  # signed for another server
    body = {**body, "response": b64url(response), "signature": b64url(key.sign(response).signature)}
    status, text = await raw(served, "POST", "/s5/account/register", json=body)
    assert status == 400 and b"authority" in text
    assert (await raw(served, "POST", "/s5/account/register", data=b"{"))[0] == 400
    assert os.listdir(tmp_path / "relay" / "accounts") == [] and os.listdir(tmp_path / "relay" / "tokens") == []
