"""The S5 portal store (stores/s5.py) against a strict loopback portal (tests/servers/s5portal.py),
one test per fault class; and, when SESSIOND_TEST_S5=URL is set, against a real portal."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import struct
import time

import pytest
from nacl.signing import SigningKey

from servers.s5portal import start_portal
from sessiond.stores import CorruptObject, ObjectMissing, StaleHead, StoreError, open_store
from sessiond.stores.cid import digest
from sessiond.stores.errors import (
    AuthRefused,
    LyingServer,
    ObjectTooLarge,
    RateLimited,
    ServerError,
    ShortAnswer,
    StoreTimeout,
    StoreUnreachable,
    WrongBytes,
)
from sessiond.stores.http import HttpClient, RetryPolicy
from sessiond.stores.registry import RegistryEntry
from sessiond.stores.s5 import S5Store, account_key
from sessiond.stores.s5feed import restarting

SEED = bytes(range(32))
FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05, max_retry_after=5)


@pytest.fixture
async def portal(tmp_path):
    p, running = await start_portal()
    yield p, running, tmp_path
    await running.stop()


def make_store(running, tmp_path, **kw) -> S5Store:
    kw.setdefault("account_seed", SEED)
    kw.setdefault("token_dir", str(tmp_path / "tokens"))
    kw.setdefault("retry", FAST)
    kw.setdefault("timeout", 5)
    return S5Store(f"s5+http://127.0.0.1:{running.port}", **kw)


def head(revision: int, key: SigningKey | None = None) -> RegistryEntry:
    key = key or SigningKey(b"\x07" * 32)
    return RegistryEntry.create(key, revision, b"\x1e" + digest(str(revision).encode()))


async def test_round_trip_logs_in_once_and_keeps_the_token_private(portal):
    p, running, tmp = portal
    store = make_store(running, tmp)
    try:
        h = await store.put(b"hello portal")
        assert h == digest(b"hello portal")
        assert await store.get(h) == b"hello portal"
        assert await store.has(h) and not await store.has(digest(b"nope"))
        assert p.logins == 1 and len(p.accounts) == 1  # registered on first use, then the token served
        files = os.listdir(tmp / "tokens")
        assert len(files) == 1
        mode = stat.S_IMODE(os.stat(tmp / "tokens" / files[0]).st_mode)
        assert mode == 0o600
        token = (tmp / "tokens" / files[0]).read_text()
        assert token in p.tokens
        assert token not in repr(store) and token not in repr(store.http)
        # a second store (a restarted daemon) uses the saved token: no new login
        await store.close()
        store = make_store(running, tmp)
        assert await store.get(h) == b"hello portal" and p.logins == 1
    finally:
        await store.close()


async def test_heads_round_trip_and_stale_revision(portal):
    p, running, tmp = portal
    store = make_store(running, tmp)
    try:
        e1, e2 = head(1), head(2)
        assert await store.get_head(e1.pk) is None
        await store.set_head(e1)
        await store.set_head(e2)
        assert await store.get_head(e1.pk) == e2
        await store.set_head(e2)  # the same entry again: idempotent
        with pytest.raises(StaleHead):
            await store.set_head(RegistryEntry.create(SigningKey(b"\x07" * 32), 2, b"\x1e" + b"\x01" * 32))
    finally:
        await store.close()


async def test_account_keys_differ_per_portal():
    a = account_key(SEED, "portal-a.example")
    b = account_key(SEED, "portal-b.example")
    assert bytes(a.verify_key) != bytes(b.verify_key)
    assert bytes(account_key(SEED, "portal-a.example").verify_key) == bytes(a.verify_key)


async def test_expired_token_renewed_once(portal):
    p, running, tmp = portal
    store = make_store(running, tmp)
    try:
        h = await store.put(b"x")
        p.faults.expire_tokens = True
        assert await store.get(h) == b"x"
        assert p.logins == 2  # one fresh login after the 401
    finally:
        await store.close()


async def test_auth_refused_after_one_relogin(portal):
    p, running, tmp = portal
    store = make_store(running, tmp)
    try:
        p.faults.reject_tokens = True
        with pytest.raises(AuthRefused) as err:
            await store.put(b"x")
        assert "after a fresh login" in str(err.value)
        assert p.logins == 1
        for token in p.tokens:
            assert token not in str(err.value)
    finally:
        await store.close()


async def test_auth_refused_without_a_key_or_with_registration_closed(portal):
    p, running, tmp = portal
    store = make_store(running, tmp, account_seed=None)
    try:
        with pytest.raises(AuthRefused, match="no device key"):
            await store.put(b"x")
    finally:
        await store.close()
    p.faults.registration_open = False
    store = make_store(running, tmp)
    try:
        with pytest.raises(AuthRefused):
            await store.put(b"x")
    finally:
        await store.close()


async def test_missing_object(portal):
    p, running, tmp = portal
    store = make_store(running, tmp)
    try:
        with pytest.raises(ObjectMissing):
            await store.get(digest(b"never stored"))
    finally:
        await store.close()


async def test_too_large_refused_before_upload(portal):
    p, running, tmp = portal
    store = make_store(running, tmp)
    try:
        with pytest.raises(ObjectTooLarge):
            await store.put(b"\0" * ((1 << 20) + 1))
        assert not any(path == "/s5/upload" for _, path, _ in p.requests)
    finally:
        await store.close()


async def test_retry_after_honoured(portal):
    p, running, tmp = portal
    store = make_store(running, tmp)
    try:
        h = await store.put(b"rate")
        p.faults.status, p.faults.times, p.faults.retry_after = 429, 1, "1"
        t0 = time.monotonic()
        assert await store.get(h) == b"rate"
        assert time.monotonic() - t0 >= 0.9  # waited as told, then succeeded
        p.faults.status, p.faults.times, p.faults.retry_after = 503, 10, "0"
        with pytest.raises(RateLimited):
            await store.get(h)
        p.faults.status, p.faults.times, p.faults.retry_after = 429, 1, "3600"
        t0 = time.monotonic()
        with pytest.raises(RateLimited) as err:
            await store.get(h)  # longer than we are willing to wait: at once, with the wish
        assert err.value.retry_after == 3600 and time.monotonic() - t0 < 2
    finally:
        await store.close()


async def test_server_errors_retried_then_reported(portal):
    p, running, tmp = portal
    store = make_store(running, tmp)
    try:
        h = await store.put(b"flaky")
        p.faults.status, p.faults.times = 500, 2
        assert await store.get(h) == b"flaky"  # two 500s, the third try answers
        p.faults.status, p.faults.times = 502, 10
        with pytest.raises(ServerError) as err:
            await store.get(h)
        assert err.value.status == 502
        assert p.faults.times == 10 - FAST.attempts
    finally:
        await store.close()


async def test_a_408_is_a_timeout_retried_not_a_refusal(portal):
    """408 Request Timeout (the relay, or a proxy, did not get the whole request in time: a slow link)
    was a refusal of the request, never retried, and `sync --wait` gave up on it as on a bad request."""
    p, running, tmp = portal
    store = make_store(running, tmp)
    try:
        await store.put(b"logged in")
        p.faults.status, p.faults.times = 408, 1
        assert await store.put(b"second try") == digest(b"second try")
        p.faults.status, p.faults.times = 408, 10
        with pytest.raises(StoreTimeout, match="in time"):
            await store.put(b"never")
        assert p.faults.times == 10 - FAST.attempts
    finally:
        await store.close()


async def test_timeout(portal):
    p, running, tmp = portal
    store = make_store(running, tmp, timeout=0.3, retry=RetryPolicy(attempts=1))
    p.faults.hang = asyncio.Event()
    try:
        with pytest.raises(StoreTimeout):
            await store.get_head(head(1).pk)
    finally:
        p.faults.hang.set()
        await store.close()


async def test_unreachable(portal):
    p, running, tmp = portal
    store = make_store(running, tmp)
    await running.stop()
    try:
        with pytest.raises(StoreUnreachable):
            await store.get(digest(b"x"))
    finally:
        await store.close()


async def test_a_connection_reset_under_a_request_is_the_store_unreachable():
    """A server stopping (a relay's upgrade, a crash) resets the connections it holds open, such as a
    long-poll under way on its change feed (ECONNRESET). That was a plain StoreError: the relay's feed
    took it as a refusal (no grace: stores/s5feed.py), and its followers went straight to reading every
    head they follow, at a clean restart too. Now it is the store unreachable, as a connection the server
    closed is: the feed waits its grace, and other requests try again."""

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the request read; no answer: the connection reset
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    client = HttpClient(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", timeout=5.0)
    try:
        with pytest.raises(StoreError) as err:
            await client.request("GET", "/s5/registry/changes", params={"since": "0"}, retry=False)
        assert isinstance(err.value, StoreUnreachable) and restarting(err.value), repr(err.value)
        assert "the connection broke (ECONNRESET)" in str(err.value)
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


async def test_wrong_bytes_and_truncated_never_accepted(portal):
    p, running, tmp = portal
    store = make_store(running, tmp)
    try:
        h = await store.put(b"genuine bytes")
        p.faults.wrong_bytes = True
        with pytest.raises(WrongBytes) as err:
            await store.get(h)
        assert isinstance(err.value, CorruptObject) and isinstance(err.value, LyingServer)
        p.faults.wrong_bytes, p.faults.truncated = False, True
        with pytest.raises(ShortAnswer, match=r"sent \d+ of \d+ bytes"):  # main: StoreUnreachable
            await store.get(h)
    finally:
        await store.close()


async def test_wrong_cid_fails_the_upload(portal):
    p, running, tmp = portal
    store = make_store(running, tmp)
    try:
        p.faults.wrong_cid = True
        with pytest.raises(LyingServer, match="not trusted"):
            await store.put(b"upload me")
    finally:
        await store.close()


async def test_an_answer_nested_too_deep_to_parse_is_a_server_error(portal):
    """JSON nested deeper than the parser goes (a lying or broken server; 1 MiB of `[` fits in an answer)
    raised RecursionError out of the store, a failure no caller classifies."""
    p, running, tmp = portal
    store = make_store(running, tmp)
    try:
        await store.put(b"logged in")
        p.faults.body = b"[" * 100_000
        with pytest.raises(ServerError, match="not JSON"):
            await store.put(b"upload me")
        with pytest.raises(ServerError, match="not JSON"):
            await store.get_head(head(1).pk)
    finally:
        await store.close()


async def test_forged_and_rolled_back_heads_refused(portal):
    p, running, tmp = portal
    store = make_store(running, tmp)
    try:
        await store.set_head(head(1))
        await store.set_head(head(2))
        assert (await store.get_head(head(1).pk)).revision == 2
        p.faults.forged_head = True
        with pytest.raises(LyingServer, match="does not verify"):
            await store.get_head(head(1).pk)
        p.faults.forged_head, p.faults.rollback_head = False, 1
        with pytest.raises(LyingServer, match="rollback"):
            await store.get_head(head(1).pk)
    finally:
        await store.close()


async def test_open_store_picks_the_portal(portal):
    p, running, tmp = portal
    store = open_store(f"s5+http://127.0.0.1:{running.port}")
    try:
        assert isinstance(store, S5Store) and store.url == f"s5+http://127.0.0.1:{running.port}"
    finally:
        await store.close()
    with pytest.raises(StoreError):
        open_store("s5+https://")


async def test_wrong_methods_refused_by_the_portal(portal):
    import aiohttp

    p, running, tmp = portal
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{running.port}/s5/upload") as r:
        assert r.status == 405


@pytest.mark.skipif(not os.environ.get("SESSIOND_TEST_S5"), reason="set SESSIOND_TEST_S5=s5+https://PORTAL")
async def test_live_portal(tmp_path):
    store = S5Store(os.environ["SESSIOND_TEST_S5"], account_seed=os.urandom(32), token_dir=str(tmp_path))
    try:
        data = os.urandom(1000)
        h = await store.put(data)
        assert await store.get(h) == data
        key = SigningKey(os.urandom(32))
        e = RegistryEntry.create(key, 1, b"\x1e" + h)
        await store.set_head(e)
        assert await store.get_head(e.pk) == e
    finally:
        await store.close()


async def test_has_reads_no_object(portal):
    """has() is the cheap check the engine's repair uses on every object of a log ("no object is
    read"): a HEAD, never a download of the bytes."""
    p, running, tmp = portal
    store = make_store(running, tmp)
    try:
        h = await store.put(b"\x01" * 200_000)
        before = len(p.requests)
        assert await store.has(h) and not await store.has(digest(b"nope"))
        assert [m for m, _, _ in p.requests[before:]] == ["HEAD", "HEAD"]
        p.faults.wrong_bytes = True  # a HEAD carries no bytes to check: presence only
        assert await store.has(h)
        p.faults.wrong_bytes = False
        p.faults.status, p.faults.times = 405, 1  # a portal without HEAD: asked again with a GET, verified
        before = len(p.requests)
        assert await store.has(h)
        assert [m for m, _, _ in p.requests[before:]] == ["HEAD", "GET"]
    finally:
        await store.close()


async def test_a_store_without_a_token_logs_in_before_sending(portal):
    """Concurrent first requests (a push uploads many objects at once) used to go out without a
    token, each refused 401 after sending its whole body, then again after the login."""
    import asyncio

    p, running, tmp = portal
    store = make_store(running, tmp)
    try:
        await asyncio.gather(*(store.put(b"object %d" % i * 1000) for i in range(8)))
        uploads = [a for m, path, a in p.requests if path == "/s5/upload"]
        assert len(uploads) == 8 and all(a and a.startswith("Bearer ") for a in uploads)
        assert p.logins == 1
    finally:
        await store.close()
