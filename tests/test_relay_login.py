"""Logging in to a relay (`sessiond serve`) through a reverse proxy that gets it wrong: a refused login
says why the relay refused it (here: a proxy that does not pass on the Host header), not only that both
login and registration were refused; and a proxy failing on its side (502) is a server error, not
credentials refused. Real processes: the relay and the daemon; the proxy on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time

import aiohttp
import blake3
from nacl.signing import SigningKey

from conftest import DaemonProc, relay_served, run_cli
from servers.proxy import make_proxy
from servers.s5portal import Running, Threaded
from sessiond.stores.errors import AuthRefused, ServerError
from sessiond.stores.http import RetryPolicy
from sessiond.stores.s5 import S5Store


def test_a_login_refused_through_a_proxy_that_drops_the_host_header_says_why(tmp_path):
    with relay_served(str(tmp_path / "relay"), "--open-registration") as info:
        proxy = Threaded(make_proxy(info["port"], pass_host=False)).start()
        home = str(tmp_path / "home")
        d = DaemonProc(home, f"s5+http://127.0.0.1:{proxy.port}").start()
        try:
            sid = d.client().create_session(name="p", initial_messages=[{"role": "user", "content": "hi"}])["id"]
            t0 = time.monotonic()
            res = run_cli(home, "sync", "--wait", "--timeout", "60", "--json")
            assert res.returncode == 1, res.stdout + res.stderr
            error = json.loads(res.stdout)["sessions"][sid]["last_error"]
            assert "refused both login and registration" in error, error
            assert "(both: HTTP 400: " in error and "pass on the Host header" in error, error  # the relay's why
            assert time.monotonic() - t0 < 30
        finally:
            d.stop()
            proxy.stop()


async def test_a_proxy_failing_on_the_login_is_a_server_error_not_credentials_refused(tmp_path):
    with relay_served(str(tmp_path / "relay"), "--open-registration") as info:

        def bad_gateway(request):
            return 502 if request.method == "POST" and request.path.startswith("/s5/account/") else None

        proxy = await Running(make_proxy(info["port"], pass_host=True, answer=bad_gateway)).start()
        store = S5Store(
            f"s5+http://127.0.0.1:{proxy.port}",
            account_seed=b"\x31" * 32,
            token_dir=str(tmp_path / "tokens"),
            retry=RetryPolicy(attempts=1),
            timeout=10,
        )
        try:
            try:
                await store.put(b"through a failing proxy")
            except AuthRefused as exc:
                raise AssertionError(f"a 502 of the proxy taken for credentials refused: {exc}") from None
            except ServerError as exc:
                assert "HTTP 502" in str(exc)
            else:
                raise AssertionError("the upload went through a proxy answering 502 to every login")
        finally:
            await store.close()
            await proxy.stop()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def _register(session: aiohttp.ClientSession, port: int, key: SigningKey, invite: str) -> tuple[int, str]:
    """One registration of `key` on the relay at `port` with `invite`, by hand: (status, text)."""
    base, pub = f"http://127.0.0.1:{port}/s5/account/register", _b64(b"\xed" + bytes(key.verify_key))
    async with session.get(base, params={"pubKey": pub}) as r:
        challenge = base64.urlsafe_b64decode((await r.json())["challenge"] + "==")
    response = b"\x01" + challenge + blake3.blake3(f"127.0.0.1:{port}".encode()).digest()
    body = {"pubKey": pub, "response": _b64(response), "signature": _b64(key.sign(response).signature)}
    async with session.post(base, json=body | {"label": "x", "invite": invite}) as r:
        return r.status, await r.text()


def _invite(data: str) -> str:
    out = run_cli(None, "serve", "invite", "--data", data, check=True)
    return out.stdout.strip()


async def test_a_key_registered_again_with_another_invite_spends_no_invite(tmp_path):
    """Registering is idempotent for a key that already has an account (it is a login): the invite it
    carries is left for another device. Registrations of one key that crossed (a daemon's requests
    retried, two daemons on one key) each spent an invite and wrote the account again, the first
    invite's label lost; a registration after a restart of the relay must not spend one either."""
    data = str(tmp_path / "relay")
    key, other = SigningKey(b"\x41" * 32), SigningKey(b"\x42" * 32)
    invites = [_invite(data) for _ in range(6)]
    with relay_served(data) as info:
        async with aiohttp.ClientSession() as s:
            said = await asyncio.gather(*(_register(s, info["port"], key, code) for code in invites[:4]))
    assert [status for status, _ in said] == [200] * 4, said
    assert len(os.listdir(os.path.join(data, "accounts"))) == 1
    assert len(os.listdir(os.path.join(data, "invites"))) == 6 - 1, "one key's crossing registrations spent invites"
    with relay_served(data) as info:  # restarted: the account is known from the disk
        async with aiohttp.ClientSession() as s:
            assert (await _register(s, info["port"], key, invites[4]))[0] == 200
            assert len(os.listdir(os.path.join(data, "invites"))) == 6 - 1
            status, text = await _register(s, info["port"], other, invites[4])  # still good for a new key
            assert status == 200, text
    assert len(os.listdir(os.path.join(data, "accounts"))) == 2
    assert len(os.listdir(os.path.join(data, "invites"))) == 6 - 2
