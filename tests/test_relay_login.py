"""Logging in to a relay (`sessiond serve`) through a reverse proxy that gets it wrong: a refused login
says why the relay refused it (here: a proxy that does not pass on the Host header), not only that both
login and registration were refused; and a proxy failing on its side (502) is a server error, not
credentials refused. Real processes: the relay and the daemon; the proxy on loopback."""

from __future__ import annotations

import json
import time

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
