"""The pinning-service wrapper (stores/pinning.py) over a Kubo store, against a strict loopback
Pinning Service API (tests/servers/pinning.py) and the loopback Kubo node; one test per fault."""

from __future__ import annotations

import json
import os
import stat

import aiohttp
import pytest
from nacl.signing import SigningKey

from servers.kubo import start_node
from servers.pinning import start_service
from sessiond.stores import StoreError, configure, open_store
from sessiond.stores.cid import BlobId, digest
from sessiond.stores.errors import AuthRefused
from sessiond.stores.http import RetryPolicy
from sessiond.stores.kubo import KuboStore
from sessiond.stores.pinning import PinningStore
from sessiond.stores.registry import RegistryEntry

FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05, max_retry_after=5)
KEY = SigningKey(b"\x05" * 32)


def cid(data: bytes) -> str:
    return BlobId(digest(data), 0).ipfs_cid()


def head(rev: int, manifest: bytes) -> RegistryEntry:
    return RegistryEntry.create(KEY, rev, b"\x1e" + digest(manifest))


@pytest.fixture
async def env(tmp_path):
    node, rpc, gw = await start_node()
    svc, running = await start_service()
    (tmp_path / "token").write_text("s3cret-token\n")
    made = []

    def make(**kw) -> PinningStore:
        kw.setdefault("token_file", str(tmp_path / "token"))
        kw.setdefault("state_dir", str(tmp_path / "state"))
        kw.setdefault("retry", FAST)
        kubo = KuboStore(f"ipfs+http://127.0.0.1:{rpc.port}", retry=FAST, timeout=5)
        s = PinningStore(kubo, f"http://127.0.0.1:{running.port}", timeout=5, **kw)
        made.append(s)
        return s

    yield node, svc, make, tmp_path
    for s in made:
        await s.close()
    await running.stop()
    await rpc.stop()
    await gw.stop()


def posts(svc) -> int:
    return sum(1 for m, p in svc.requests if m == "POST")


async def test_objects_and_manifest_pinned_once_and_durably(env):
    node, svc, make, tmp = env
    store = make()
    blobs = [b"page %d" % i for i in range(3)]
    for b in blobs:
        await store.put(b)
    assert svc.requests == []  # batched: nothing until the head (or a full batch)
    await store.set_head(head(1, b"manifest 1"))
    pinned = {p["pin"]["cid"] for p in svc.pins.values()}
    assert pinned == {cid(b) for b in blobs} | {cid(b"manifest 1")}
    assert all(digest(b) in node.blocks for b in blobs)  # the inner store has them too
    assert store.status()["pending"] == 0 and store.status()["last_error"] is None
    state = tmp / "state" / os.listdir(tmp / "state")[0]
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    assert set(json.loads(state.read_text())["pins"]) == pinned
    # idempotent: the same objects again, and a restart, ask nothing of the service
    n = len(svc.requests)
    await store.put(blobs[0])
    await store.set_head(head(2, b"manifest 1"))
    assert len(svc.requests) == n
    await store.close()
    again = make()
    await again.put(blobs[1])
    await again.set_head(head(3, b"manifest 1"))
    assert len(svc.requests) == n and len(svc.pins) == 4
    # only one GET per 10 CIDs, one POST per new CID
    await again.put(b"new page")
    await again.set_head(head(4, b"manifest 2"))
    assert len(svc.requests) == n + 1 + 2 and len(svc.pins) == 6


async def test_full_batch_sent_without_a_head(env):
    node, svc, make, tmp = env
    store = make(batch=12)
    for i in range(11):
        await store.put(b"b%d" % i)
    assert svc.requests == []
    await store.put(b"b11")
    gets = [p for m, p in svc.requests if m == "GET"]
    assert len(gets) == 2 and all(p.count("cid=") <= 10 for p in gets)  # the spec's 10 CIDs per query
    assert all("status=pinned" in p and "status=queued" in p for p in gets)
    assert posts(svc) == 12


async def test_pins_requested_elsewhere_are_not_asked_again_but_failed_ones_are(env):
    node, svc, make, tmp = env
    other = make(state_dir=str(tmp / "other-state"))
    await other.put(b"shared")
    await other.put(b"doomed")
    await other.set_head(head(1, b"m"))
    doomed = next(p for p in svc.pins.values() if p["pin"]["cid"] == cid(b"doomed"))
    doomed["status"] = "failed"
    n = posts(svc)
    store = make()  # another device: an empty state file
    await store.put(b"shared")
    await store.put(b"doomed")
    await store.set_head(head(2, b"m"))
    assert posts(svc) == n + 1  # only the failed one is asked again
    assert len(svc.live(cid(b"shared"))) == 1 and len(svc.live(cid(b"doomed"))) == 1


async def test_service_down_never_fails_a_push_and_nothing_is_forgotten(env):
    node, svc, make, tmp = env
    store = make()
    await store.put(b"kept")
    svc.faults.status, svc.faults.times = 502, 100
    await store.set_head(head(1, b"m"))  # the head is published in Kubo even so
    assert await store.get_head(head(1, b"m").pk) == head(1, b"m")
    st = store.status()
    assert st["pending"] == 2 and "502" in st["last_error"]
    await store.close()
    svc.faults.times = 0
    restarted = make()  # the waiting CIDs survived the restart
    assert restarted.status()["pending"] == 2
    assert await restarted.flush() == 2
    assert {p["pin"]["cid"] for p in svc.pins.values()} == {cid(b"kept"), cid(b"m")}
    assert restarted.status() == {**restarted.status(), "pending": 0, "last_error": None}


async def test_rate_limited_then_retried(env):
    node, svc, make, tmp = env
    store = make()
    await store.put(b"x")
    svc.faults.status, svc.faults.times, svc.faults.retry_after = 429, 2, "0"
    assert await store.flush() == 1
    assert svc.faults.times == 0


async def test_refused_token_is_read_again_once_and_never_shown(env):
    node, svc, make, tmp = env
    (tmp / "token").write_text("wrong-token\n")
    store = make()
    await store.put(b"x")
    with pytest.raises(AuthRefused) as err:
        await store.flush()
    assert "wrong-token" not in str(err.value) and "wrong-token" not in repr(store)
    await store.set_head(head(1, b"m"))  # the push goes on; the error is kept
    assert "refused" in store.status()["last_error"] and "wrong-token" not in store.status()["last_error"]
    (tmp / "token").write_text("s3cret-token\n")  # renewed by its owner: picked up on the next 401
    assert await store.flush() == 2
    with pytest.raises(StoreError, match="one access token"):
        (tmp / "token").write_text("two tokens\n")
        make()


async def test_release_unpins_everywhere_and_is_idempotent(env):
    node, svc, make, tmp = env
    store = make()
    hs = [await store.put(b"r%d" % i) for i in range(3)]
    await store.set_head(head(1, b"m"))
    other = make(state_dir=str(tmp / "other"))  # knows none of the request ids: looks them up
    await other.unpin([hs[0]])
    assert not svc.live(cid(b"r0")) and digest(b"r0") not in node.pins
    await store.unpin(hs[:2])  # r0's request is gone already (404): fine
    assert not svc.live(cid(b"r1")) and svc.live(cid(b"r2"))
    assert digest(b"r1") not in node.pins and digest(b"r2") in node.pins
    assert all(m in ("GET", "POST", "DELETE") for m, _ in svc.requests)
    await store.unpin(hs[:2])
    # released objects put again are pinned again
    await store.put(b"r1")
    await store.flush()
    assert svc.live(cid(b"r1"))


async def test_pins_remembered_are_bounded_and_a_forgotten_one_is_looked_up(env):
    """Every append adds objects: only the most recent pin requests are kept (memory, state file); a
    forgotten one wanted again is asked about, not pinned twice, and unpinned by its CID."""
    node, svc, make, tmp = env
    store = make(pins_kept=5)
    hs = [await store.put(b"obj %d" % i) for i in range(20)]
    await store.set_head(head(1, b"m"))
    assert len(svc.pins) == 21 and store.status()["pinned"] == 5
    state = tmp / "state" / os.listdir(tmp / "state")[0]
    assert len(json.loads(state.read_text())["pins"]) == 5
    n = posts(svc)
    await store.put(b"obj 0")  # forgotten: looked up, found live, not requested again
    await store.flush()
    assert posts(svc) == n and len(svc.live(cid(b"obj 0"))) == 1
    await store.unpin([hs[1]])  # forgotten: its request is found by CID and deleted
    assert not svc.live(cid(b"obj 1"))


async def test_configured_pinning_wraps_kubo_stores(env, tmp_path):
    node, svc, make, tmp = env
    port = int(make().service.rsplit(":", 1)[1])
    try:
        configure(
            pinning_service=f"http://127.0.0.1:{port}",
            pinning_token_file=str(tmp / "token"),
            pinning_state_dir=str(tmp / "cfg"),
        )
        store = open_store("ipfs+http://127.0.0.1:1")
        assert isinstance(store, PinningStore) and isinstance(store.inner, KuboStore)
        await store.close()
        assert not isinstance(open_store("s5+http://127.0.0.1:1"), PinningStore)
        with pytest.raises(StoreError, match="token"):
            configure(pinning_service="http://127.0.0.1:1")
    finally:
        configure()


async def test_the_loopback_service_is_strict(env):
    node, svc, make, tmp = env
    base = make().service
    auth = {"Authorization": "Bearer s3cret-token"}
    c = cid(b"x")
    async with aiohttp.ClientSession() as s:

        async def call(method, path, **kw):
            async with s.request(method, base + path, **kw) as r:
                return r.status, (await r.json() if r.content_type == "application/json" else None)

        assert (await call("GET", "/pins"))[0] == 401
        status, body = await call("GET", "/pins", headers={"Authorization": "Bearer nope"})
        assert status == 401 and body["error"]["reason"] == "UNAUTHORIZED"
        many = "&".join(f"cid={cid(b'%d' % i)}" for i in range(11))
        assert (await call("GET", "/pins?" + many, headers=auth))[0] == 400
        assert (await call("GET", "/pins?limit=0", headers=auth))[0] == 400
        assert (await call("GET", "/pins?status=done", headers=auth))[0] == 400
        assert (await call("POST", "/pins", headers=auth, json={"cid": c, "extra": 1}))[0] == 400
        assert (await call("POST", "/pins", headers=auth, json={"cid": "not a cid"}))[0] == 400
        status, pin = await call("POST", "/pins", headers=auth, json={"cid": c})
        assert status == 202 and pin["status"] == "queued" and pin["delegates"]
        status, res = await call("GET", "/pins", headers=auth)  # no filter: only pinned ones
        assert res["count"] == 1 and res["results"][0]["status"] == "pinned"
        assert (await call("DELETE", f"/pins/{pin['requestid']}", headers=auth))[0] == 202
        assert (await call("DELETE", f"/pins/{pin['requestid']}", headers=auth))[0] == 404


# ---------------------------------------------------------------- the daemon's pinning_service setting


def _daemon_home(make_daemon, store_url: str, config: str, token: str | None = "s3cret-token\n", mode=0o600):
    d = make_daemon(store_url)
    os.makedirs(d.home, mode=0o700)
    (open(os.path.join(d.home, "config.toml"), "w")).write(config)
    if token is not None:
        path = os.path.join(d.home, "pinning-token")
        with open(path, "w") as f:
            f.write(token)
        os.chmod(path, mode)
    return d


@pytest.fixture
def threaded_kubo_and_service():
    from servers.kubo import Node, make_rpc_app
    from servers.pinning import Service
    from servers.pinning import make_app as make_pinning_app
    from servers.s5portal import Threaded

    node, svc = Node(), Service()
    rpc = Threaded(make_rpc_app(node)).start()
    service = Threaded(make_pinning_app(svc)).start()
    yield node, f"ipfs+http://127.0.0.1:{rpc.port}", svc, f"http://127.0.0.1:{service.port}"
    service.stop()
    rpc.stop()


def test_a_daemon_with_pinning_service_pins_what_it_pushes(make_daemon, threaded_kubo_and_service):
    from waiting import wait_for

    node, kubo_url, svc, service_url = threaded_kubo_and_service
    config = f'pinning_service = "{service_url}"\nmax_requests_per_second = 50\n'
    d = _daemon_home(make_daemon, kubo_url, config).start()
    c = d.client()
    sid = c.create_session(name="pinned", initial_messages=[{"role": "user", "content": "hello"}])["id"]
    c.append(sid, "assistant", "hi")
    manifest = c.end(sid)["snapshot"]["manifest_ipfs_cid"]  # ends it: a checkpoint, everything pushed

    def live() -> set:
        return {p["pin"]["cid"] for p in svc.pins.values() if p["status"] != "failed"}

    # every object the daemon put in the Kubo node (pages, manifests, the members slot's objects) is
    # pinned at the service too, with the token from <home>/pinning-token; the head's manifest among them
    wait_for(lambda: {BlobId(h, 0).ipfs_cid() for h in node.blocks} <= live(), timeout=20, what="all pinned")
    assert manifest in live() and len(node.blocks) >= 2  # a page and the manifest, at least
    assert all(m in ("GET", "POST", "DELETE") for m, _ in svc.requests)
    (state,) = os.listdir(os.path.join(d.home, "pinning"))  # the pin request ids, kept in the home
    assert stat.S_IMODE(os.stat(os.path.join(d.home, "pinning", state)).st_mode) == 0o600
    for log in os.listdir(os.path.join(d.home, "logs")):
        assert "s3cret-token" not in open(os.path.join(d.home, "logs", log), errors="replace").read()


def test_a_pinning_service_refusing_the_token_shows_in_status_and_doctor(make_daemon, threaded_kubo_and_service):
    """A pinning service that refuses the home's token fails no push (the pins wait), so the pushes, status
    and doctor all said everything was fine: the refusal was only in the daemon's log, and the objects
    were pinned nowhere but the node. Now status shows each store's pinning service (`stores[].pinning`:
    pinned, waiting, last error) and doctor warns, naming the token file; a valid token written there is
    read again at the next try, and the waiting pins are made. status's pinning error line came with no
    way on (every other error line it prints names one): now a `fix:` line follows it, as doctor's."""
    from conftest import run_cli
    from waiting import wait_for

    node, kubo_url, svc, service_url = threaded_kubo_and_service
    config = f'pinning_service = "{service_url}"\n'
    d = _daemon_home(make_daemon, kubo_url, config, token="not-the-token\n").start()
    c = d.client()
    sid = c.create_session(name="pins", initial_messages=[{"role": "user", "content": "hello"}])["id"]
    assert c.sync(sid, wait=True, timeout=30)["complete"]  # the push itself succeeds

    def pinning() -> dict:
        (st,) = c.status()["stores"]
        return st.get("pinning") or {}

    wait_for(lambda: pinning().get("last_error"), timeout=20, what="the refusal in status")  # main: no "pinning"
    assert pinning()["pending"] > 0 and "refused" in pinning()["last_error"], pinning()
    token_file = os.path.join(d.home, "pinning-token")
    res = run_cli(d.home, "doctor", "--no-verify", "--json")
    (warn,) = [f for f in json.loads(res.stdout)["findings"] if f["check"] == "pinning"]
    assert warn["level"] == "warn" and token_file in warn["fix"], warn
    shown = run_cli(d.home, "status").stdout  # the error line, and what to do on the line after it
    assert "pinning" in shown and f"fix: ( umask 077; cat > {token_file} )" in shown, shown
    assert pinning()["fix"] == warn["fix"], pinning()  # the answer's `fix`: doctor's words
    with open(token_file, "w") as f:
        f.write("s3cret-token\n")
    c.append(sid, "user", "again")  # the next push makes the waiting pins
    wait_for(lambda: pinning().get("pending") == 0 and pinning().get("last_error") is None, timeout=20)
    assert svc.pins and "not-the-token" not in json.dumps(c.status())


@pytest.mark.parametrize(
    "config, token, mode, store, message",
    [
        ('pinning_service = "ftp://pins.example"\n', "t\n", 0o600, "kubo", "pinning_service must be the http(s) URL"),
        ("pinning_service = 3\n", "t\n", 0o600, "kubo", "pinning_service must be the http(s) URL"),
        ('pinning_service = "https://pins.example"\n', None, 0o600, "kubo", "pinning-token does not exist"),
        ('pinning_service = "https://pins.example"\n', "t\n", 0o644, "kubo", "open to group or others"),
        ('pinning_service = "https://pins.example"\n', "t\n", 0o600, "file", "needs an IPFS node's store"),
        ("max_requests_per_second = 0\n", None, 0o600, "kubo", "'max_requests_per_second' must be a positive"),
        ('max_requests_per_second = "fast"\n', None, 0o600, "kubo", "'max_requests_per_second' must be a"),
        ('pinning_servce = "https://pins.example"\n', None, 0o600, "kubo", "did you mean 'pinning_service'"),
    ],
)
def test_pinning_and_rate_config_errors_are_clear(make_daemon, config, token, mode, store, message):
    from conftest import run_cli

    d = _daemon_home(make_daemon, "ipfs+http://127.0.0.1:9" if store == "kubo" else None, config, token, mode)
    args = ["daemon"] + (["--store", d.store] if d.store else [])
    res = run_cli(d.home, *args)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr


def test_pages_put_before_a_kill_9_are_pinned_once_the_push_resumes(make_daemon, threaded_kubo_and_service):
    """A push puts its pages (each wanted for a pin at the service, batched), records its revision, then
    publishes the manifest and head, whose publication sends the batch. The CIDs waiting were only in memory
    until then: killed in between, the resumed push published the manifest and head alone, and the pages put
    before the kill were never pinned at the service (only in the node: gone for a follower once the node
    is off or collects them), with the push reported done. They are written to the state file before the
    push records its revision (Store.keep_wanted)."""
    from conftest import run_cli
    from waiting import wait_for

    node, kubo_url, svc, service_url = threaded_kubo_and_service
    config = f'pinning_service = "{service_url}"\nmax_requests_per_second = 50\npush_delay = 3600\n'
    d = _daemon_home(make_daemon, kubo_url, config)
    d.env["SESSIOND_CRASH_AT"] = "push:recorded"
    d.start()
    sid = d.client().create_session(name="pinned", initial_messages=[{"role": "user", "content": "hello"}])["id"]
    res = run_cli(d.home, "sync", sid, "--wait", "--json")
    assert res.returncode != 0, res.stdout  # killed with the pages put, the head not published
    assert d.proc.wait(10) == 137
    put = {BlobId(h, 0).ipfs_cid() for h in node.blocks}
    assert put  # the pages
    d.env.pop("SESSIOND_CRASH_AT")
    d.start()
    d.client().sync(sid, wait=True)

    def live() -> set:
        return {p["pin"]["cid"] for p in svc.pins.values() if p["status"] != "failed"}

    wait_for(lambda: put <= live(), timeout=8, what="the pages put before the kill pinned at the service")
    wait_for(lambda: {BlobId(h, 0).ipfs_cid() for h in node.blocks} <= live(), timeout=8, what="all pinned")


async def test_pins_wanted_are_kept_once_the_state_file_can_be_written_again(env):
    """keep_wanted() (a push, before it records the revision naming its pages) whose write of the state file
    failed (the home's disk full, its folder gone) marked the waiting CIDs written all the same: the push failed,
    and its retry's keep_wanted() wrote nothing, so the revision was recorded with the pages' pins in memory only
    (a kill then: never pinned at the service). They count as written only once they are."""
    node, svc, make, tmp = env
    store = make()
    await store.put(b"page wanted")
    path = store._state_path
    os.makedirs(os.path.join(path, "in the way"))  # (a folder where the file goes: its rename fails)
    with pytest.raises(OSError):
        await store.keep_wanted()
    os.rmdir(os.path.join(path, "in the way"))
    os.rmdir(path)
    await store.keep_wanted()  # the retry's
    with open(path, "rb") as f:
        assert json.loads(f.read())["pending"] == [cid(b"page wanted")]
